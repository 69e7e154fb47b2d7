// crdcheck decodes Prometheus Operator manifests strictly into the operator's own API types: an unknown or
// misspelt field, or a value of the wrong type, is an error (kustomize and promtool do not look at them).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("read: %v", err)
	}
	n := 0
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			fail("yaml: %v", err)
		}
		var meta struct{ Kind string }
		if err := json.Unmarshal(js, &meta); err != nil || meta.Kind == "" {
			continue
		}
		var obj any
		switch meta.Kind {
		case "PrometheusRule":
			obj = &monitoringv1.PrometheusRule{}
		case "PodMonitor":
			obj = &monitoringv1.PodMonitor{}
		case "ServiceMonitor":
			obj = &monitoringv1.ServiceMonitor{}
		default:
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			fail("%s: %v", meta.Kind, err)
		}
		n++
		fmt.Printf("ok: %s\n", meta.Kind)
	}
	if n == 0 {
		fail("no PrometheusRule, PodMonitor or ServiceMonitor in the input")
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "crdcheck: "+format+"\n", args...)
	os.Exit(1)
}
