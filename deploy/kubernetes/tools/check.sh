#!/usr/bin/env bash
# Renders every kustomization under deploy/kubernetes with kustomize and validates the result
# with kubeconform -strict, offline: `make k8s-check`. Installs what is missing into
# ~/.cache/medstream (MEDSTREAM_CACHE): kustomize and kubeconform as Go modules, Kubernetes'
# JSON schemas from the kubernetes-validate wheel (PyPI), KEDA's CRDs from its Go module.
# Strimzi's CRDs are kept in deploy/kubernetes/schemas/strimzi-1.2.0 (see its README).
set -euo pipefail
cd "$(dirname "$0")/../../.."

KUSTOMIZE_VERSION=v5.8.1
KUBECONFORM_VERSION=v0.7.0
KEDA_VERSION=v2.21.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# The oldest and newest Kubernetes releases the manifests are checked against.
KUBERNETES_VERSIONS="${K8S_CHECK_VERSIONS:-1.30.0 1.37.0}"

CACHE="${MEDSTREAM_CACHE:-$HOME/.cache/medstream}"
BIN="$CACHE/bin"
PYTHON="${PYTHON:-.venv/bin/python}"
SCHEMAS="$CACHE/k8s-schemas"
CORE="$SCHEMAS/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
mkdir -p "$BIN" "$SCHEMAS"

go_tool() { # name module version
  local stamp="$BIN/.$1-$3"
  if [[ ! -x "$BIN/$1" || ! -e "$stamp" ]]; then
    echo "installing $2@$3 into $BIN"
    GOBIN="$BIN" go install "$2@$3"
    rm -f "$BIN/.$1-"*
    touch "$stamp"
  fi
}
go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"

for version in $KUBERNETES_VERSIONS; do
  if [[ ! -e "$CORE/v$version-local-strict/_definitions.json" ]]; then
    wheel="$SCHEMAS/kubernetes_validate-$KUBERNETES_VALIDATE_VERSION-py3-none-any.whl"
    if [[ ! -e "$wheel" ]]; then
      "$PYTHON" -m pip download --quiet --no-deps --dest "$SCHEMAS" \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    fi
    "$PYTHON" deploy/kubernetes/tools/k8s_schemas.py core "$wheel" "$CORE" "$version"
  fi
done

keda_dir="$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" \
  | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
CRDS="$(mktemp -d)"
trap 'rm -rf "$CRDS"' EXIT
"$PYTHON" deploy/kubernetes/tools/k8s_schemas.py crds "$CRDS" \
  deploy/kubernetes/schemas/strimzi-1.2.0/*.yaml \
  "$keda_dir/config/crd/bases/keda.sh_scaledobjects.yaml" \
  "$keda_dir/config/crd/bases/keda.sh_triggerauthentications.yaml"

echo "kustomize $("$BIN/kustomize" version), kubeconform $("$BIN/kubeconform" -v)," \
  "Kubernetes schemas of kubernetes-validate $KUBERNETES_VALIDATE_VERSION," \
  "Strimzi 1.2.0 and KEDA $KEDA_VERSION CRDs"
rendered="$CRDS/rendered.yaml"
for dir in deploy/kubernetes/base deploy/kubernetes/strimzi deploy/kubernetes/keda \
  deploy/kubernetes/overlays/*/; do
  "$BIN/kustomize" build "$dir" > "$rendered"
  for version in $KUBERNETES_VERSIONS; do
    echo "== ${dir%/} (Kubernetes $version)"
    # No -ignore-missing-schemas: a kind without a schema fails the check.
    "$BIN/kubeconform" -strict -summary -kubernetes-version "$version" \
      -schema-location "$CORE/{{ .NormalizedKubernetesVersion }}-local-strict/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      -schema-location "$CRDS/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
      "$rendered"
  done
done
