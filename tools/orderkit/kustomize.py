"""A tiny `kustomize build` for the features deploy/kubernetes uses, so CI can render the base
offline without kubectl or a Go toolchain (neither is a package on these machines). Anything else
in a kustomization is refused, never ignored. scripts/check-kubernetes compares its output with
`kubectl kustomize` wherever kubectl is installed.

Supported: `resources` (files, or folders holding a kustomization), `namespace`, `labels`
(`pairs`, `includeSelectors`, `includeTemplates`), `images` (`name`, `newName`, `newTag`,
`digest`), and the `apiVersion`/`kind` header."""

import copy
import os

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images"}
# Kinds that live in no namespace (of the ones a service's base could hold).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass", "PersistentVolume"}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class Unsupported(ValueError):
    pass


def build(path):
    """The resources of the kustomization in folder `path`, transformed: a list of dicts."""
    with open(os.path.join(path, "kustomization.yaml")) as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - SUPPORTED
    if unknown:
        raise Unsupported(f"{path}/kustomization.yaml: {', '.join(sorted(unknown))} not supported by this renderer")
    docs = []
    for res in k.get("resources", []):
        full = os.path.join(path, res)
        if os.path.isdir(full):
            docs += build(full)
        else:
            with open(full) as f:
                docs += [d for d in yaml.safe_load_all(f) if d]
    docs = [copy.deepcopy(d) for d in docs]
    for d in docs:
        if "namespace" in k and d.get("kind") not in CLUSTER_SCOPED:
            d.setdefault("metadata", {})["namespace"] = k["namespace"]
        for entry in k.get("labels", []):
            _label(d, entry)
        for image in k.get("images", []):
            _image(d, image)
    return docs


def _label(doc, entry):
    unknown = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
    if unknown:
        raise Unsupported(f"labels: {', '.join(sorted(unknown))} not supported")
    pairs = entry.get("pairs", {})
    doc.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    spec = doc.get("spec", {})
    templates = entry.get("includeTemplates") or entry.get("includeSelectors")
    if templates and doc.get("kind") in POD_TEMPLATE_KINDS:
        spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    if entry.get("includeSelectors"):
        if doc.get("kind") == "Service":
            spec.setdefault("selector", {}).update(pairs)
        elif doc.get("kind") in POD_TEMPLATE_KINDS or doc.get("kind") == "PodDisruptionBudget":
            spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)


def _containers(doc):
    pod = doc.get("spec", {})
    if doc.get("kind") in POD_TEMPLATE_KINDS:
        pod = pod.get("template", {}).get("spec", {})
    elif doc.get("kind") != "Pod":
        return []
    return pod.get("containers", []) + pod.get("initContainers", [])


def _image(doc, image):
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise Unsupported(f"images: {', '.join(sorted(unknown))} not supported")
    for c in _containers(doc):
        ref = c.get("image", "")
        name, tag = _split(ref)
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        if "digest" in image:
            c["image"] = f"{name}@{image['digest']}"
        else:
            tag = image.get("newTag", tag)
            c["image"] = f"{name}:{tag}" if tag else name


def _split(ref):
    """'repo/name:tag' → ('repo/name', 'tag'); a ':' inside a registry's host:port is not a tag."""
    ref = ref.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, ""


def dump(docs):
    return yaml.safe_dump_all(docs, sort_keys=True, default_flow_style=False)
