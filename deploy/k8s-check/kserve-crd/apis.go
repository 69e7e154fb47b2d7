// Package kservecrd only imports KServe's serving API, so that go mod tidy keeps it and its
// dependencies in go.sum and controller-gen can load the package from this module.
package kservecrd

import _ "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
