// Command schemacheck decodes Kubernetes manifests strictly into the API's
// own Go types (k8s.io/api): an unknown or misspelt field, or a value of the
// wrong type, is an error. It needs no cluster. deploy/check.sh runs it:
//
//	go run . ../*.yaml
//
// It is a module of its own so that Sluice's module does not depend on
// k8s.io/api.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func target(apiVersion, kind string) any {
	switch apiVersion + " " + kind {
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}
	case "v1 Service":
		return &corev1.Service{}
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}
	case "v1 Secret":
		return &corev1.Secret{}
	case "v1 Namespace":
		return &corev1.Namespace{}
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	}
	return nil
}

func main() {
	failed := 0
	for _, path := range os.Args[1:] {
		if strings.HasSuffix(path, "kustomization.yaml") {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Printf("FAIL  %s: %v\n", path, err)
			failed++
			continue
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				fmt.Printf("FAIL  %s: %v\n", path, err)
				failed++
				break
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				fmt.Printf("FAIL  %s: %v\n", path, err)
				failed++
				continue
			}
			what := fmt.Sprintf("%s %s/%s", path, head.Kind, head.Metadata.Name)
			obj := target(head.APIVersion, head.Kind)
			if obj == nil {
				fmt.Printf("FAIL  %s: no schema for %s %s\n", what, head.APIVersion, head.Kind)
				failed++
				continue
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				fmt.Printf("FAIL  %s: %v\n", what, err)
				failed++
				continue
			}
			fmt.Printf("ok    %s: decodes strictly as %s %s\n", what, head.APIVersion, head.Kind)
		}
	}
	if failed > 0 {
		os.Exit(1)
	}
}
