"""Unit tests of the tiny kustomize renderer: python3 -m unittest discover -s tools -p 'test_*.py'."""

import os
import tempfile
import textwrap
import unittest

from orderkit import kustomize


def write(d, name, text):
    with open(os.path.join(d, name), "w") as f:
        f.write(textwrap.dedent(text))


DEPLOYMENT = """
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers: [{name: web, image: registry.local:5000/web}, {name: side, image: other:1}]
    """


class Build(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.d = self.dir.name
        write(self.d, "deployment.yaml", DEPLOYMENT)
        write(self.d, "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")

    def tearDown(self):
        self.dir.cleanup()

    def test_namespace_labels_and_images_are_applied_as_kustomize_does(self):
        write(self.d, "kustomization.yaml", """
            resources: [deployment.yaml, ns.yaml]
            namespace: shop
            labels: [{pairs: {team: orders}, includeSelectors: false}]
            images: [{name: registry.local:5000/web, newName: web, newTag: "2"}]
            """)
        dep, ns = kustomize.build(self.d)
        self.assertEqual(dep["metadata"], {"name": "web", "namespace": "shop", "labels": {"team": "orders"}})
        self.assertEqual(ns["metadata"], {"name": "shop", "labels": {"team": "orders"}}, "namespaces have no namespace")
        self.assertEqual(dep["spec"]["selector"], {"matchLabels": {"app": "web"}}, "selectors untouched")
        self.assertEqual(dep["spec"]["template"]["metadata"]["labels"], {"app": "web"})
        images = [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]]
        self.assertEqual(images, ["web:2", "other:1"], "a registry's port is not a tag; other images untouched")

    def test_include_selectors_labels_selectors_and_templates(self):
        write(self.d, "kustomization.yaml", """
            resources: [deployment.yaml]
            labels: [{pairs: {team: orders}, includeSelectors: true}]
            """)
        (dep,) = kustomize.build(self.d)
        self.assertEqual(dep["spec"]["selector"]["matchLabels"], {"app": "web", "team": "orders"})
        self.assertEqual(dep["spec"]["template"]["metadata"]["labels"], {"app": "web", "team": "orders"})

    def test_a_folder_resource_is_built_first_and_a_digest_pins_the_image(self):
        os.mkdir(os.path.join(self.d, "base"))
        write(os.path.join(self.d, "base"), "deployment.yaml", DEPLOYMENT)
        write(os.path.join(self.d, "base"), "kustomization.yaml", "resources: [deployment.yaml]\n")
        write(self.d, "kustomization.yaml", """
            resources: [base]
            images: [{name: other, digest: "sha256:abc"}]
            """)
        (dep,) = kustomize.build(self.d)
        self.assertEqual(dep["spec"]["template"]["spec"]["containers"][1]["image"], "other@sha256:abc")

    def test_an_unsupported_feature_is_refused_not_ignored(self):
        write(self.d, "kustomization.yaml", "resources: [deployment.yaml]\ncommonLabels: {a: b}\n")
        with self.assertRaisesRegex(kustomize.Unsupported, "commonLabels"):
            kustomize.build(self.d)
        write(self.d, "kustomization.yaml", "resources: [deployment.yaml]\nimages: [{name: web, newTagg: x}]\n")
        with self.assertRaisesRegex(kustomize.Unsupported, "newTagg"):
            kustomize.build(self.d)


if __name__ == "__main__":
    unittest.main()
