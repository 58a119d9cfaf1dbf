//! The store's own tests: concurrency, splices, keys and versions.

use super::*;
use crate::splice::Entries;

fn store() -> Store {
    Store::new(Arc::new(SystemTime::now))
}

fn pods(store: &Store) -> Arc<Resource> {
    store.resource("", "pods").expect("pods are built in")
}

#[test]
fn concurrent_status_writes_to_one_object_lose_no_update() {
    let store = Arc::new(store());
    let pods = pods(&store);
    store
        .create(&pods, "default", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {}}))
        .unwrap();
    // One writer of whole objects, one of spliced statuses.
    let writers: Vec<_> = [false, true]
        .into_iter()
        .map(|spliced| {
            let (store, pods) = (store.clone(), pods.clone());
            std::thread::spawn(move || {
                let increment = |s: &mut Value| {
                    s["count"] = json!(s["count"].as_u64().unwrap_or(0) + 1);
                };
                for _ in 0..500 {
                    if spliced {
                        store
                            .modify_status(&pods, "default", "p", increment)
                            .unwrap();
                    } else {
                        store
                            .modify(&pods, "default", "p", Part::Status, |p| {
                                increment(&mut p["status"])
                            })
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let pod = store.get_value(&pods, "default", "p").unwrap();
    assert_eq!(pod["status"]["count"], 1000, "every increment counted once");
    assert_eq!(
        pod["metadata"]["resourceVersion"],
        json!(store.resource_version().to_string()),
        "the last write's version"
    );
}

#[test]
fn owned_pairs_are_found_by_borrowed_ones() {
    let keys = [("", "b"), ("a", ""), ("a", "b"), ("ab", ""), ("b", "a")];
    let hashed: HashMap<(String, String), usize> = keys
        .iter()
        .enumerate()
        .map(|(i, (a, b))| (((*a).to_owned(), (*b).to_owned()), i))
        .collect();
    let ordered: BTreeMap<(String, String), usize> = hashed.clone().into_iter().collect();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(hashed.get(key as &dyn Pair), Some(&i));
        assert_eq!(ordered.get(key as &dyn Pair), Some(&i));
    }
    assert_eq!(hashed.get(&("a", "c") as &dyn Pair), None);
    assert_eq!(ordered.get(&("", "") as &dyn Pair), None);
}

#[test]
fn a_first_status_is_placed_after_the_spec_as_a_whole_object_write_would() {
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    let (spliced, whole) = (
        Store::new(Arc::new(move || at)),
        Store::new(Arc::new(move || at)),
    );
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    for store in [&spliced, &whole] {
        let deployments = store.resource("apps", "deployments").unwrap();
        store
            .create(&deployments, "default", deployment.clone())
            .unwrap();
    }
    let deployments = spliced.resource("apps", "deployments").unwrap();
    let status = json!({"replicas": 1, "readyReplicas": 1});
    spliced
        .modify_status(&deployments, "default", "d", |s| *s = status.clone())
        .unwrap();
    whole
        .modify(&deployments, "default", "d", Part::Status, |o| {
            o["status"] = status.clone()
        })
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&spliced.get(&deployments, "default", "d").unwrap()),
        String::from_utf8_lossy(&whole.get(&deployments, "default", "d").unwrap())
    );
}

#[test]
fn a_status_write_returns_the_version_it_wrote_or_none_when_nothing_changed() {
    let store = store();
    let deployments = store.resource("apps", "deployments").unwrap();
    // Made without a status: the first one is placed after the spec.
    store
        .create(&deployments, "default", json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .unwrap();
    let ready = |n: u64| move |s: &mut Value| s["readyReplicas"] = json!(n);
    let rv = store.resource_version();
    assert_eq!(
        store
            .modify_status(&deployments, "default", "d", ready(1))
            .unwrap(),
        Some(rv + 1),
        "the version written is returned"
    );
    assert_eq!(store.resource_version(), rv + 1);
    assert_eq!(
        store
            .modify_status(&deployments, "default", "d", ready(1))
            .unwrap(),
        None
    );
    assert_eq!(
        store.resource_version(),
        rv + 1,
        "the same status writes nothing"
    );
    // Now it has a status, replaced from here on.
    assert_eq!(
        store
            .modify_status(&deployments, "default", "d", ready(2))
            .unwrap(),
        Some(rv + 2)
    );
    let stored = store.get_value(&deployments, "default", "d").unwrap();
    assert_eq!(stored["status"], json!({"readyReplicas": 2}));
    assert_eq!(
        stored["metadata"]["generation"], 1,
        "a status is not a spec change"
    );
}

#[test]
fn a_binding_sets_the_node_alone_once() {
    let store = store();
    let pods = pods(&store);
    store
        .create(&pods, "default", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .unwrap();
    let before = store.get_value(&pods, "default", "p").unwrap();
    let mut watch = store.watch(&pods, None, None).unwrap().live;
    let written = store.bind(&pods, "default", "p", "n1").unwrap();
    let event = watch.try_recv().unwrap();
    assert_eq!(written, Some(event.rv));
    assert!(event.fields.contains(&("spec.nodeName", "n1".to_owned())));
    let mut expected = before;
    expected["spec"]["nodeName"] = json!("n1");
    expected["metadata"]["resourceVersion"] = json!(event.rv.to_string());
    // Nothing else changed: not the generation, not the status.
    assert_eq!(store.get_value(&pods, "default", "p").unwrap(), expected);
    let on_n1 = FieldSelector::parse("spec.nodeName=n1").unwrap();
    let page = store
        .list(&pods, None, &LabelSelector::default(), &on_n1, None, None)
        .unwrap();
    assert_eq!(page.items.len(), 1);
    // Again to the same node: nothing written; to another: refused.
    assert_eq!(store.bind(&pods, "default", "p", "n1").unwrap(), None);
    assert_eq!(
        store.bind(&pods, "default", "p", "n2").unwrap_err().code,
        409
    );
    assert!(watch.try_recv().is_err());
    assert_eq!(
        store.bind(&pods, "default", "gone", "n1").unwrap_err().code,
        404
    );
}

#[test]
fn a_status_write_stores_what_a_whole_object_write_would() {
    let fixed = || SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let (whole, spliced) = (Store::new(Arc::new(fixed)), Store::new(Arc::new(fixed)));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
    let mut watches = Vec::new();
    for store in [&whole, &spliced] {
        store.create(&pods(store), "default", pod.clone()).unwrap();
        watches.push(store.watch(&pods(store), None, None).unwrap().live);
    }
    let steps: [fn(&mut Value); 3] = [
        |s| s["phase"] = json!("Running"),
        |s| s["conditions"] = json!([{"type": "Ready", "status": "True"}]),
        |s| *s = json!({"phase": "Failed", "reason": "Evicted"}),
    ];
    for step in steps {
        whole
            .modify(&pods(&whole), "default", "p", Part::Status, |o| {
                step(&mut o["status"])
            })
            .unwrap();
        let written = spliced
            .modify_status(&pods(&spliced), "default", "p", step)
            .unwrap();
        let (a, b) = (
            watches[0].try_recv().unwrap(),
            watches[1].try_recv().unwrap(),
        );
        assert_eq!(written, Some(b.rv));
        assert_eq!(
            String::from_utf8_lossy(&a.object),
            String::from_utf8_lossy(&b.object)
        );
        assert_eq!((a.rv, &a.labels, &a.fields), (b.rv, &b.labels, &b.fields));
    }
    let failed = LabelSelector::default();
    let fields = FieldSelector::parse("status.phase=Failed").unwrap();
    let page = spliced
        .list(
            &pods(&spliced),
            Some("default"),
            &failed,
            &fields,
            None,
            None,
        )
        .unwrap();
    assert_eq!(
        page.items.len(),
        1,
        "the phase's field index follows the status"
    );
    // The same status again: no write, no version, no event.
    let rv = spliced.resource_version();
    let again = spliced
        .modify_status(&pods(&spliced), "default", "p", |s| {
            s["phase"] = json!("Failed")
        })
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(spliced.resource_version(), rv);
    assert!(watches[1].try_recv().is_err());
}

#[test]
fn an_object_that_quotes_the_version_placeholder_is_still_stored_whole() {
    let store = store();
    let pods = pods(&store);
    let created = store
        .create(&pods, "default", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"note": RV_HOLE}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .unwrap();
    let stored = store.get_value(&pods, "default", "p").unwrap();
    assert_eq!(stored["metadata"]["annotations"]["note"], RV_HOLE);
    assert_eq!(
        stored["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    assert_ne!(stored["metadata"]["resourceVersion"], RV_HOLE);
}

#[test]
fn stored_bytes_carry_the_version_the_write_returned() {
    let store = store();
    let pods = pods(&store);
    store
        .create(&pods, "default", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .unwrap();
    let written = store
        .modify(&pods, "default", "p", Part::Status, |p| {
            p["status"]["phase"] = json!("Running")
        })
        .unwrap();
    let stored = store.get_value(&pods, "default", "p").unwrap();
    assert_eq!(stored, written);
    assert_eq!(
        stored["metadata"]["resourceVersion"],
        json!(store.resource_version().to_string())
    );
}

#[test]
fn status_entries_and_whole_statuses_are_stored_as_an_edited_status_would_be() {
    let fixed = || SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let [edited, by_entries, replaced] = [(); 3].map(|()| Store::new(Arc::new(fixed)));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let mut watches = Vec::new();
    for store in [&edited, &by_entries, &replaced] {
        store.create(&pods(store), "default", pod.clone()).unwrap();
        watches.push(store.watch(&pods(store), None, None).unwrap().live);
    }
    let ready = json!([{"type": "Ready", "status": "True"}]);
    type Step = (fn(&mut Value), fn(&mut Entries) -> serde_json::Result<()>);
    let steps: [Step; 3] = [
        (
            |s| {
                s["phase"] = json!("Running");
                s["podIP"] = json!("10.0.0.1");
            },
            |e| {
                e.set("podIP", &"10.0.0.1")?;
                e.set("phase", &"Running")
            },
        ),
        (
            |s| s["conditions"] = json!([{"type": "Ready", "status": "True"}]),
            |e| e.set("conditions", &json!([{"type": "Ready", "status": "True"}])),
        ),
        (
            |s| s["phase"] = json!("Failed"),
            |e| e.set("phase", &"Failed"),
        ),
    ];
    for (by_value, entries) in steps {
        edited
            .modify_status(&pods(&edited), "default", "p", by_value)
            .unwrap();
        by_entries
            .modify_status_entries(&pods(&by_entries), "default", "p", |s| {
                entries(s).map_err(|e| ApiError::internal(e.to_string()))
            })
            .unwrap();
        let status = edited.get_value(&pods(&edited), "default", "p").unwrap()["status"].clone();
        replaced
            .set_status(&pods(&replaced), "default", "p", &status)
            .unwrap();
        let events = watches.iter_mut().map(|w| w.try_recv().unwrap());
        let [a, b, c] = <[_; 3]>::try_from(events.collect::<Vec<_>>()).unwrap();
        for other in [&b, &c] {
            assert_eq!(
                String::from_utf8_lossy(&a.object),
                String::from_utf8_lossy(&other.object)
            );
            assert_eq!((a.rv, &a.fields), (other.rv, &other.fields));
        }
    }
    assert_eq!(status_of(&by_entries)["conditions"], ready);
    let fields = FieldSelector::parse("status.phase=Failed").unwrap();
    let everything = LabelSelector::default();
    let pods_res = pods(&by_entries);
    let page = by_entries
        .list(&pods_res, None, &everything, &fields, None, None)
        .unwrap();
    assert_eq!(page.items.len(), 1, "the phase's field index follows");
}

fn status_of(store: &Store) -> Value {
    store.get_value(&pods(store), "default", "p").unwrap()["status"].clone()
}

#[test]
fn copies_are_stored_as_creates_of_the_same_object_would_be() {
    let fixed = || SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let (copied, created) = (Store::new(Arc::new(fixed)), Store::new(Arc::new(fixed)));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "labels": {"app": "web"}, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u1", "controller": true}]}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let mut watch = copied.watch(&pods(&copied), None, None).unwrap().live;
    copied
        .create_copies(&pods(&copied), "default", pod.clone(), 3)
        .unwrap();
    let one = created.create(&pods(&created), "default", pod).unwrap();
    let mut names = BTreeSet::new();
    let mut last_rv = 0;
    while let Ok(event) = watch.try_recv() {
        assert_eq!(event.kind, EventType::Added);
        assert!(event.rv > last_rv, "one version each, in order");
        last_rv = event.rv;
        let mut copy: Value = serde_json::from_slice(&event.object).unwrap();
        let meta = copy["metadata"].clone();
        assert_eq!(meta["resourceVersion"], json!(event.rv.to_string()));
        assert!(meta["name"].as_str().unwrap().starts_with("web-"));
        assert_eq!(meta["name"], json!(event.name));
        assert!(names.insert(meta["uid"].as_str().unwrap().to_owned()));
        // But for its name, uid and version, and the generated name of its
        // token volume, what a create stores.
        for key in ["name", "uid", "resourceVersion"] {
            copy["metadata"][key] = one["metadata"][key].clone();
        }
        let volume = one["spec"]["volumes"][0]["name"].clone();
        assert!(volume.as_str().unwrap().starts_with("kube-api-access-"));
        copy["spec"]["volumes"][0]["name"] = volume.clone();
        copy["spec"]["containers"][0]["volumeMounts"][0]["name"] = volume;
        assert_eq!(copy, one);
        assert_eq!(
            copied
                .get_value(&pods(&copied), "default", &event.name)
                .unwrap()["metadata"]["uid"],
            meta["uid"]
        );
        assert_eq!(event.labels, labels_of(&one));
        assert_eq!(event.fields, fields_of(&one));
    }
    assert_eq!(names.len(), 3);
    assert_eq!(
        copied.dependents("u1").len(),
        3,
        "indexed under their owner"
    );
}
