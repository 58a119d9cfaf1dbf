// Command protoclient drives an API server with client-go configured for
// protobuf, as controllers built on client-go (Argo Rollouts among them)
// are: creates, reads, updates, a scale, a watch and deletes of built-in
// kinds. It prints, one JSON line each, what it saw, so a test can run it
// against the simulator and against kube-apiserver and compare.
//
//	go run ./protoclient KUBECONFIG NAMESPACE
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
)

func say(step string, v any) {
	line, err := json.Marshal(map[string]any{"step": step, "saw": v})
	if err != nil {
		fail(step, err)
	}
	fmt.Println(string(line))
}

func fail(step string, err error) {
	fmt.Fprintf(os.Stderr, "protoclient: %s: %v\n", step, err)
	os.Exit(1)
}

func ptr[T any](v T) *T { return &v }

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: protoclient KUBECONFIG NAMESPACE")
		os.Exit(2)
	}
	config, err := clientcmd.BuildConfigFromFlags("", os.Args[1])
	if err != nil {
		fail("kubeconfig", err)
	}
	// Protobuf bodies, and protobuf alone accepted (AcceptContentTypes
	// left to default to ContentType), as controllers usually set it.
	config.ContentType = "application/vnd.kubernetes.protobuf"
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		fail("client", err)
	}
	ns := os.Args[2]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		fail("namespace", err)
	}
	labels := map[string]string{"app": "web"}
	deployment := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: labels, Annotations: map[string]string{"note": "made over protobuf"}},
		Spec: appsv1.DeploymentSpec{
			Replicas:             ptr(int32(2)),
			RevisionHistoryLimit: ptr(int32(0)),
			Selector:             &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxSurge:       ptr(intstr.FromInt32(1)),
					MaxUnavailable: ptr(intstr.FromString("0%")),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr(false),
					Containers: []corev1.Container{{
						Name:  "web",
						Image: "registry.example/web:1.0",
						Args:  []string{"--port", "8080"},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						Env:   []corev1.EnvVar{{Name: "MODE", Value: "fast"}, {Name: "EMPTY"}},
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("0.25"), corev1.ResourceMemory: resource.MustParse("64Mi")},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}},
							PeriodSeconds: 2,
						},
						SecurityContext: &corev1.SecurityContext{RunAsNonRoot: ptr(true), AllowPrivilegeEscalation: ptr(false)},
					}},
					Volumes: []corev1.Volume{{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr(resource.MustParse("64Mi"))}}}},
				},
			},
		},
	}
	created, err := client.AppsV1().Deployments(ns).Create(ctx, deployment, metav1.CreateOptions{})
	if err != nil {
		fail("create deployment", err)
	}
	say("create deployment", map[string]any{"generation": created.Generation, "spec": created.Spec})

	watch, err := client.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "app=web", ResourceVersion: created.ResourceVersion})
	if err != nil {
		fail("watch", err)
	}
	defer watch.Stop()

	// The Deployment controller writes its status meanwhile: read, change
	// and write again on a conflict, as controllers do.
	var updated *appsv1.Deployment
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		current, err := client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		current.Spec.Template.Spec.Containers[0].Image = "registry.example/web:2.0"
		updated, err = client.AppsV1().Deployments(ns).Update(ctx, current, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		fail("update deployment", err)
	}
	say("update deployment", map[string]any{"generation": updated.Generation, "image": updated.Spec.Template.Spec.Containers[0].Image})
	for event := range watch.ResultChan() {
		d, ok := event.Object.(*appsv1.Deployment)
		if ok && event.Type == "MODIFIED" && d.Spec.Template.Spec.Containers[0].Image == "registry.example/web:2.0" {
			say("watch", map[string]any{"type": event.Type, "generation": d.Generation})
			break
		}
	}

	var scaled *autoscalingv1.Scale
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		scale, err := client.AppsV1().Deployments(ns).GetScale(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		scale.Spec.Replicas = 3
		scaled, err = client.AppsV1().Deployments(ns).UpdateScale(ctx, "web", scale, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		fail("update scale", err)
	}
	say("update scale", scaled.Spec)

	secret, err := client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds"},
		Data:       map[string][]byte{"key": {0, 1, 2, 255}},
		StringData: map[string]string{"password": "s3cret"},
	}, metav1.CreateOptions{})
	if err != nil {
		fail("create secret", err)
	}
	say("create secret", map[string]any{"type": secret.Type, "data": secret.Data})

	service, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		fail("create service", err)
	}
	service.Spec.ClusterIP, service.Spec.ClusterIPs = "", nil
	say("create service", service.Spec)

	now := metav1.NewMicroTime(time.Date(2026, 12, 6, 12, 0, 0, 123456000, time.UTC))
	event, err := client.EventsV1().Events(ns).Create(ctx, &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: "web.1"},
		EventTime:           now,
		ReportingController: "example.com/protoclient",
		ReportingInstance:   "protoclient-1",
		Action:              "Test",
		Reason:              "Tested",
		Type:                "Normal",
		Note:                "an event over protobuf",
		Regarding:           corev1.ObjectReference{Kind: "Deployment", Namespace: ns, Name: "web", APIVersion: "apps/v1"},
	}, metav1.CreateOptions{})
	if err != nil {
		fail("create event", err)
	}
	say("create event", map[string]any{"eventTime": event.EventTime, "note": event.Note, "regarding": event.Regarding.Name})

	bad := deployment.DeepCopy()
	bad.Name = "bad"
	bad.Spec.Replicas = ptr(int32(-1))
	_, err = client.AppsV1().Deployments(ns).Create(ctx, bad, metav1.CreateOptions{})
	say("create bad deployment", fmt.Sprint(err))

	if err := client.AppsV1().Deployments(ns).Delete(ctx, "web", metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationBackground)}); err != nil {
		fail("delete deployment", err)
	}
	if err := client.CoreV1().Secrets(ns).Delete(ctx, "creds", metav1.DeleteOptions{DryRun: []string{"All"}}); err != nil {
		fail("dry-run delete secret", err)
	}
	_, err = client.CoreV1().Secrets(ns).Get(ctx, "creds", metav1.GetOptions{})
	say("secret after a dry-run delete", err == nil)
}
