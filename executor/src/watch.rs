//! Watches over the namespaces the executor acts in.
//!
//! Cluster-wide, one watch per resource. Confined to some namespaces
//! (`--namespace a,b`: Roles in each, no ClusterRole), one watch per
//! namespace, merged here into one stream a single reflector can follow.
//!
//! A reflector reads a watch's list as `Init`, `InitApply`…, `InitDone`
//! and swaps the listed objects in at the end. Several namespaces' lists
//! interleaved would each reset the others', so [`merged`] turns them into
//! one list: it keeps what every namespace listed (and what their watches
//! changed meanwhile) until the last namespace has listed, then emits the
//! lot as a single list. A namespace that lists again later (its watch
//! expired or failed) has its objects emitted as changes, and what it no
//! longer lists as deletions, so the other namespaces' objects stay put.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{WatchStreamExt, reflector::Store, watcher},
};
use serde::de::DeserializeOwned;
use sluice_runtime::auth::Scope;

/// What the executor watches: namespaced objects it can read and share
/// across tasks.
pub(crate) trait Watched:
    Resource<Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// The APIs of `K` over `scope`: one for the cluster, or one per namespace.
pub(crate) fn apis<K>(client: &Client, scope: &Scope) -> Vec<Api<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Scope::All => vec![Api::all(client.clone())],
        Scope::Namespaces(namespaces) => namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect(),
    }
}

/// The namespaces of a merged watch that have not listed yet: their
/// objects are not in the store, whatever it says of the others.
#[derive(Debug, Clone, Default)]
pub(crate) struct Unlisted(Arc<Mutex<BTreeSet<String>>>);

impl Unlisted {
    /// Whether `namespace` has not listed yet.
    pub(crate) fn contains(&self, namespace: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(namespace)
    }

    fn listed(&self, namespace: &str) {
        let was = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(namespace);
        if was {
            tracing::info!(namespace, "listed this namespace; releases there go on");
        }
    }

    fn lost(&self, namespace: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(namespace.to_owned());
    }
}

/// The watch events of `K` over `scope`, for a reflector writing `store`
/// (read to find what a namespace's relist no longer holds).
pub(crate) fn events<K>(
    client: &Client,
    scope: &Scope,
    store: Store<K>,
) -> BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>
where
    K: Watched,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    tracked(client, scope, store).0
}

/// [`events`], and which namespaces have not listed yet.
///
/// A namespace whose list the API server refuses (403: no Role there, or
/// no such namespace; 404) does not keep the others waiting: the store is
/// ready once every other namespace has listed, and the refused one stays
/// [`Unlisted`] (retried with back-off) until it lists.
pub(crate) fn tracked<K>(
    client: &Client,
    scope: &Scope,
    store: Store<K>,
) -> (
    BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>,
    Unlisted,
)
where
    K: Watched,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let known = move |ns: &str| {
        store
            .state()
            .into_iter()
            .filter(|o| o.namespace().as_deref() == Some(ns))
            .map(|o| (*o).clone())
            .collect()
    };
    kept(client, scope, watcher::Config::default(), known, |k| k)
}

/// The watch events of `K` over `scope`, each object turned by `keep` into
/// what the store they feed holds of it (say, only its metadata), and
/// which namespaces have not listed yet; `known(ns)` is what that store
/// holds in `ns`. Each watch's objects are
/// turned as they arrive, so a merged list holds only what `keep` keeps
/// (and a smaller `config.page_size` bounds how many whole objects a list
/// holds at once).
pub(crate) fn kept<K, C>(
    client: &Client,
    scope: &Scope,
    config: watcher::Config,
    known: impl Fn(&str) -> Vec<C> + Send + 'static,
    keep: impl Fn(K) -> C + Clone + Send + Sync + 'static,
) -> (
    BoxStream<'static, Result<watcher::Event<C>, watcher::Error>>,
    Unlisted,
)
where
    K: Watched,
    K::DynamicType: Default,
    C: Resource + Clone + Send + Sync + 'static,
{
    let mut watches: Vec<_> = apis::<K>(client, scope)
        .into_iter()
        .map(|api| {
            let keep = keep.clone();
            patient(watcher(api, config.clone()))
                .map_ok(move |event| turned(event, &keep))
                .boxed()
        })
        .collect();
    let unlisted = Unlisted::default();
    if watches.len() == 1 {
        return (watches.remove(0), unlisted);
    }
    let namespaces = match scope {
        Scope::Namespaces(namespaces) => namespaces.clone(),
        Scope::All => Vec::new(),
    };
    unlisted
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(namespaces.iter().cloned());
    let stream = merged(namespaces, watches, unlisted.clone(), known).boxed();
    (stream, unlisted)
}

/// `event` with its object turned by `keep`.
fn turned<K, C>(event: watcher::Event<K>, keep: impl Fn(K) -> C) -> watcher::Event<C> {
    use watcher::Event;
    match event {
        Event::Apply(o) => Event::Apply(keep(o)),
        Event::Delete(o) => Event::Delete(keep(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(keep(o)),
        Event::InitDone => Event::InitDone,
    }
}

/// Whether `error` is the API server refusing a namespace's first list
/// (403 or 404), as against the server being unreachable.
fn refused(error: &watcher::Error) -> bool {
    matches!(
        error,
        watcher::Error::InitialListFailed(kube::Error::Api(e)) if e.code == 403 || e.code == 404
    )
}

/// The objects of `K` over `scope` as their watches touch them, with no
/// store (for triggers only).
pub(crate) fn touched<K>(
    client: &Client,
    scope: &Scope,
) -> BoxStream<'static, Result<K, watcher::Error>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    K::DynamicType: Default,
{
    futures::stream::select_all(apis::<K>(client, scope).into_iter().map(|api| {
        patient(watcher(api, watcher::Config::default()))
            .touched_objects()
            .boxed()
    }))
    .boxed()
}

/// The first wait after a failed watch, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(800), Duration::from_secs(30));

/// `events` retried with a back-off that doubles on each failure up to 30
/// s, and starts over only once the watch has listed or changed
/// something. (kube-runtime's own back-off starts over on any event, and
/// a watcher announces each new list before making it: a list refused
/// every time was retried about once a second.)
fn patient<K, S>(events: S) -> BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    futures::stream::unfold(
        (events.boxed(), Duration::ZERO, false),
        |(mut events, mut delay, wait)| async move {
            if wait {
                tokio::time::sleep(delay).await;
            }
            let item = events.next().await?;
            let wait = match &item {
                Err(_) => {
                    delay = (delay * 2).clamp(BACKOFF.0, BACKOFF.1);
                    true
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => false,
                Ok(_) => {
                    delay = Duration::ZERO;
                    false
                }
            };
            Some((item, (events, delay, wait)))
        },
    )
    .boxed()
}

/// Where [`merged`] is.
struct Merge<K> {
    /// Each namespace's objects until every namespace has listed once.
    pending: Option<BTreeMap<(String, String), K>>,
    /// Whether each namespace has listed once.
    listed: Vec<bool>,
    /// The names each namespace's relist has shown so far.
    relisting: Vec<Option<HashSet<String>>>,
}

/// The watches of `namespaces[i]` (the `i`th of `watches`) as one watch of
/// them all; `known(ns)` is what the reflector holds in `ns`.
fn merged<K, S>(
    namespaces: Vec<String>,
    watches: Vec<S>,
    unlisted: Unlisted,
    known: impl Fn(&str) -> Vec<K> + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    use watcher::Event;
    let count = watches.len();
    let tagged = futures::stream::select_all(
        watches
            .into_iter()
            .enumerate()
            .map(|(i, w)| w.map(move |e| (i, e)).boxed()),
    );
    let start = Merge {
        pending: Some(BTreeMap::new()),
        listed: vec![false; count],
        relisting: vec![None; count],
    };
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    tagged
        .scan(start, move |merge, (i, event)| {
            let ns = namespaces.get(i).map(String::as_str).unwrap_or_default();
            let out: Vec<Result<Event<K>, watcher::Error>> = match event {
                // A namespace refused before it ever listed: the others
                // need not wait for it.
                // Each namespace's watch backs off on its own; an error
                // passed on would make a controller back off them all.
                Err(e) if refused(&e) && !merge.listed[i] => {
                    tracing::warn!(namespace = ns, error = %e, "cannot list this namespace; releases there wait until it can be");
                    merge.listed[i] = true;
                    let mut out = Vec::new();
                    if merge.listed.iter().all(|l| *l)
                        && let Some(all) = merge.pending.take()
                    {
                        out.extend(
                            std::iter::once(Event::Init)
                                .chain(all.into_values().map(Event::InitApply))
                                .chain(std::iter::once(Event::InitDone))
                                .map(Ok),
                        );
                    }
                    out
                }
                // Listed once, refused now (its Role or the namespace
                // gone): what the store holds of it can no longer be
                // trusted, so it goes, and the namespace is unlisted
                // again until a list succeeds.
                Err(e) if refused(&e) => {
                    if !unlisted.contains(ns) {
                        tracing::warn!(namespace = ns, error = %e, "this namespace can no longer be listed; releases there wait until it can be");
                        unlisted.lost(ns);
                    }
                    merge.relisting[i] = None;
                    match &mut merge.pending {
                        Some(pending) => {
                            pending.retain(|(n, _), _| n != ns);
                            Vec::new()
                        }
                        None => known(ns).into_iter().map(|o| Ok(Event::Delete(o))).collect(),
                    }
                }
                Err(e) => {
                    tracing::debug!(namespace = ns, error = %e, "a namespace's watch failed; retrying");
                    Vec::new()
                }
                Ok(event) => match (&mut merge.pending, event) {
                    // Before the one list ends: gather.
                    (Some(pending), Event::Apply(o) | Event::InitApply(o)) => {
                        if let Some(seen) = &mut merge.relisting[i] {
                            seen.insert(o.name_any());
                        }
                        pending.insert(key(&o), o);
                        Vec::new()
                    }
                    (Some(pending), Event::Delete(o)) => {
                        pending.remove(&key(&o));
                        Vec::new()
                    }
                    (Some(_), Event::Init) => {
                        if merge.listed[i] {
                            merge.relisting[i] = Some(HashSet::new());
                        }
                        Vec::new()
                    }
                    (Some(pending), Event::InitDone) => {
                        unlisted.listed(ns);
                        if let Some(seen) = merge.relisting[i].take() {
                            pending.retain(|(n, name), _| n != ns || seen.contains(name));
                        }
                        merge.listed[i] = true;
                        if merge.listed.iter().all(|l| *l) {
                            let all = merge.pending.take().unwrap_or_default();
                            std::iter::once(Event::Init)
                                .chain(all.into_values().map(Event::InitApply))
                                .chain(std::iter::once(Event::InitDone))
                                .map(Ok)
                                .collect()
                        } else {
                            Vec::new()
                        }
                    }
                    // After it: a namespace's relist is changes to it.
                    (None, Event::Init) => {
                        merge.relisting[i] = Some(HashSet::new());
                        Vec::new()
                    }
                    (None, Event::InitApply(o)) => {
                        if let Some(seen) = &mut merge.relisting[i] {
                            seen.insert(o.name_any());
                        }
                        vec![Ok(Event::Apply(o))]
                    }
                    (None, Event::InitDone) => {
                        unlisted.listed(ns);
                        match merge.relisting[i].take() {
                            Some(seen) => known(ns)
                                .into_iter()
                                .filter(|o| !seen.contains(&o.name_any()))
                                .map(|o| Ok(Event::Delete(o)))
                                .collect(),
                            None => Vec::new(),
                        }
                    }
                    (None, e @ (Event::Apply(_) | Event::Delete(_))) => vec![Ok(e)],
                },
            };
            std::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use watcher::Event;

    fn cm(ns: &str, name: &str, v: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.namespace = Some(ns.into());
        c.metadata.name = Some(name.into());
        c.data = Some([("v".to_owned(), v.to_owned())].into());
        c
    }

    /// Feeds `script` (namespace index, event) through [`merged`] into a
    /// reflector and returns what its store holds after each step, as
    /// sorted `ns/name=v` strings (`None` until the store is ready).
    async fn run(script: Vec<(usize, Event<ConfigMap>)>) -> Vec<Option<Vec<String>>> {
        let script = script.into_iter().map(|(i, e)| (i, Ok(e))).collect();
        run_with(script, &Unlisted::default()).await
    }

    async fn run_with(
        script: Vec<(usize, Result<Event<ConfigMap>, watcher::Error>)>,
        unlisted: &Unlisted,
    ) -> Vec<Option<Vec<String>>> {
        let (reader, writer) = reflector::store::<ConfigMap>();
        let (a_tx, a_rx) = futures::channel::mpsc::unbounded();
        let (b_tx, b_rx) = futures::channel::mpsc::unbounded();
        let known = reader.clone();
        let stream = merged(
            vec!["a".into(), "b".into()],
            vec![a_rx.boxed(), b_rx.boxed()],
            unlisted.clone(),
            move |ns| {
                known
                    .state()
                    .into_iter()
                    .filter(|o| o.namespace().as_deref() == Some(ns))
                    .map(|o| (*o).clone())
                    .collect()
            },
        );
        let mut reflected = Box::pin(reflector::reflector(writer, stream));
        let mut seen = Vec::new();
        for (i, event) in script {
            let tx = if i == 0 { &a_tx } else { &b_tx };
            tx.unbounded_send(event).unwrap();
            // Drain what the step produced.
            while let Some(Some(_)) = futures::FutureExt::now_or_never(reflected.next()) {}
            let ready = futures::FutureExt::now_or_never(reader.wait_until_ready()).is_some();
            seen.push(ready.then(|| {
                let mut s: Vec<String> = reader
                    .state()
                    .iter()
                    .map(|o| {
                        format!(
                            "{}/{}={}",
                            o.namespace().unwrap_or_default(),
                            o.name_any(),
                            o.data
                                .as_ref()
                                .and_then(|d| d.get("v"))
                                .cloned()
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                s.sort();
                s
            }));
        }
        seen
    }

    fn held(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| (*s).to_owned()).collect())
    }

    #[tokio::test]
    async fn the_store_is_ready_once_every_namespace_has_listed_and_holds_their_changes_meanwhile()
    {
        let seen = run(vec![
            (0, Event::Init),
            (0, Event::InitApply(cm("a", "x", "1"))),
            (0, Event::InitApply(cm("a", "gone", "1"))),
            (0, Event::InitDone),
            // a's watch goes on while b still lists.
            (0, Event::Apply(cm("a", "x", "2"))),
            (0, Event::Delete(cm("a", "gone", "1"))),
            (1, Event::Init),
            (1, Event::InitApply(cm("b", "y", "1"))),
            (1, Event::InitDone),
        ])
        .await;
        assert!(seen[..8].iter().all(Option::is_none), "{seen:?}");
        assert_eq!(seen[8], held(&["a/x=2", "b/y=1"]));
    }

    #[tokio::test]
    async fn a_later_relist_of_one_namespace_leaves_the_others_and_drops_what_it_no_longer_lists() {
        let seen = run(vec![
            (0, Event::Init),
            (0, Event::InitApply(cm("a", "x", "1"))),
            (0, Event::InitApply(cm("a", "old", "1"))),
            (0, Event::InitDone),
            (1, Event::Init),
            (1, Event::InitApply(cm("b", "y", "1"))),
            (1, Event::InitDone),
            // a's watch expires; it lists again.
            (0, Event::Init),
            (0, Event::InitApply(cm("a", "x", "3"))),
            (0, Event::InitApply(cm("a", "new", "1"))),
            (0, Event::InitDone),
            (1, Event::Apply(cm("b", "y", "2"))),
        ])
        .await;
        assert_eq!(seen[6], held(&["a/old=1", "a/x=1", "b/y=1"]));
        // The relist's objects are changes as they come; b is untouched.
        assert_eq!(seen[8], held(&["a/old=1", "a/x=3", "b/y=1"]));
        assert_eq!(seen[10], held(&["a/new=1", "a/x=3", "b/y=1"]));
        assert_eq!(seen[11], held(&["a/new=1", "a/x=3", "b/y=2"]));
    }

    #[tokio::test]
    async fn a_relist_before_the_others_have_listed_still_drops_what_it_no_longer_lists() {
        let seen = run(vec![
            (0, Event::Init),
            (0, Event::InitApply(cm("a", "old", "1"))),
            (0, Event::InitDone),
            (0, Event::Init),
            (0, Event::InitApply(cm("a", "x", "1"))),
            (0, Event::InitDone),
            (1, Event::Init),
            (1, Event::InitDone),
        ])
        .await;
        assert_eq!(seen[7], held(&["a/x=1"]));
    }

    fn forbidden() -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(
            serde_json::from_value(serde_json::json!({
                "status": "Failure", "message": "rollouts is forbidden",
                "reason": "Forbidden", "code": 403}))
            .unwrap(),
        ))
    }

    #[tokio::test]
    async fn a_namespace_the_server_refuses_does_not_hold_the_others_and_stays_unlisted_until_it_lists()
     {
        let unlisted = Unlisted::default();
        unlisted
            .0
            .lock()
            .unwrap()
            .extend(["a".to_owned(), "b".to_owned()]);
        let seen = run_with(
            vec![
                (0, Ok(Event::Init)),
                (0, Ok(Event::InitApply(cm("a", "x", "1")))),
                (0, Ok(Event::InitDone)),
                // b has no Role yet (or does not exist).
                (1, Err(forbidden())),
            ],
            &unlisted,
        )
        .await;
        assert_eq!(seen[3], held(&["a/x=1"]), "a is served");
        assert!(!unlisted.contains("a"));
        assert!(unlisted.contains("b"), "b's objects are not known");
        // Once b can be listed, its objects arrive and it is listed.
        let later = run_with(
            vec![
                (0, Ok(Event::Init)),
                (0, Ok(Event::InitDone)),
                (1, Err(forbidden())),
                (1, Ok(Event::Init)),
                (1, Ok(Event::InitApply(cm("b", "y", "1")))),
                (1, Ok(Event::InitDone)),
            ],
            &unlisted,
        )
        .await;
        assert_eq!(later[5], held(&["b/y=1"]));
        assert!(!unlisted.contains("b"));
    }

    #[tokio::test]
    async fn a_namespace_refused_after_it_listed_is_dropped_and_unlisted_until_it_lists_again() {
        let unlisted = Unlisted::default();
        let seen = run_with(
            vec![
                (0, Ok(Event::Init)),
                (0, Ok(Event::InitApply(cm("a", "x", "1")))),
                (0, Ok(Event::InitDone)),
                (1, Ok(Event::Init)),
                (1, Ok(Event::InitApply(cm("b", "y", "1")))),
                (1, Ok(Event::InitDone)),
                // b's Role is taken away; its next list is refused.
                (1, Ok(Event::Init)),
                (1, Err(forbidden())),
            ],
            &unlisted,
        )
        .await;
        assert_eq!(seen[5], held(&["a/x=1", "b/y=1"]));
        assert_eq!(
            seen[7],
            held(&["a/x=1"]),
            "b's objects are not trusted any more"
        );
        assert!(unlisted.contains("b"));
        assert!(!unlisted.contains("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_refused_every_time_is_retried_ever_more_slowly() {
        let attempts = (0..4).flat_map(|_| [Ok(Event::Init), Err(forbidden())]);
        let events: Vec<Result<Event<ConfigMap>, watcher::Error>> = attempts.collect();
        let start = tokio::time::Instant::now();
        let mut stream = patient(futures::stream::iter(events));
        let mut gaps = Vec::new();
        let mut last = start;
        while let Some(item) = stream.next().await {
            if item.is_ok() {
                gaps.push((tokio::time::Instant::now() - last).as_millis());
            }
            last = tokio::time::Instant::now();
        }
        // Each new attempt waits twice as long as the one before.
        assert_eq!(gaps, [0, 800, 1600, 3200]);
    }
}
