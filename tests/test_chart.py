"""The Helm chart, rendered by Helm's own engine (helm-python-sdk) and every manifest checked
against the Kubernetes schemas (kubernetes-validate), offline; plus the Heroku files."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from consumer_host.cli import cli

ROOT = Path(__file__).parent.parent
CHART = ROOT / "charts" / "consumer-host"
VARIANTS = sorted((CHART / "ci").glob("*.yaml"))
KUBE_VERSIONS = ["1.29.0", "1.33.0"]
BASE = {"app": "shop.consumers:host", "broker": {"existingSecret": {"name": "shop-broker"}}}


def render(values: dict) -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        out = chart.render(values, name="demo", namespace="workers", is_install=True)
    docs = []
    for path, body in sorted(out.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(body) if d]
    return docs


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def the_deployment(docs: list[dict]) -> dict:
    [deployment] = of_kind(docs, "Deployment")
    return deployment


def container(docs: list[dict]) -> dict:
    [main] = the_deployment(docs)["spec"]["template"]["spec"]["containers"]
    return main


class TestRendering:
    def test_lint_reports_no_errors(self):
        for values in (BASE, *(yaml.safe_load(v.read_text()) for v in VARIANTS)):
            result = helm.lint(str(CHART), values, strict=True, kube_version="v1.30.0")
            assert result["errors"] == []
            assert [m for m in result["messages"] if m["severity"] >= 2] == []

    @pytest.mark.parametrize("kube", KUBE_VERSIONS)
    @pytest.mark.parametrize("variant", VARIANTS, ids=lambda p: p.stem)
    def test_every_variant_renders_manifests_valid_for_kubernetes(self, variant, kube):
        docs = render(yaml.safe_load(variant.read_text()))
        assert the_deployment(docs)
        for doc in docs:
            if doc["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
                continue  # custom resources: their fields are checked below
            kubernetes_validate.validate(doc, kube, strict=True)

    def test_defaults_give_a_hardened_worker_without_a_service(self):
        docs = render(BASE)
        assert not of_kind(docs, "Service")
        pod = the_deployment(docs)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        main = container(docs)
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        assert main["securityContext"]["allowPrivilegeEscalation"] is False
        assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
        assert main["args"] == ["run", "shop.consumers:host"]
        assert main["image"] == "consumer-host:0.1.0", "the tag defaults to appVersion"

    def test_probes_point_at_the_health_port_and_paths(self):
        main = container(render(BASE))
        env = {e["name"]: e.get("value") for e in main["env"]}
        [port] = main["ports"]
        assert port["name"] == "health"
        assert env["CONSUMER_HOST_HEALTH_PORT"] == str(port["containerPort"])
        assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


class TestShutdownTiming:
    @pytest.mark.parametrize(("drain", "pre_stop"), [(25, 0), (45, 5), (0, 0)])
    def test_the_grace_period_is_derived_to_exceed_the_drain(self, drain, pre_stop):
        docs = render({**BASE, "drainTimeout": drain, "preStopSleep": pre_stop})
        pod = the_deployment(docs)["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in container(docs)["env"]}
        assert env["CONSUMER_HOST_DRAIN_TIMEOUT"] == str(drain)
        assert pod["terminationGracePeriodSeconds"] > drain + pre_stop

    def test_an_explicit_grace_period_that_cuts_the_drain_short_fails(self):
        with pytest.raises(helm.HelmRenderError, match="must exceed drainTimeout"):
            render({**BASE, "drainTimeout": 25, "terminationGracePeriodSeconds": 25})


class TestBrokerSecret:
    def test_an_existing_secret_keeps_the_url_out_of_every_manifest(self):
        docs = render(
            {**BASE, "broker": {"existingSecret": {"name": "shop-broker", "key": "CLOUDAMQP_URL"}}}
        )
        assert not of_kind(docs, "Secret")
        [broker] = [e for e in container(docs)["env"] if e["name"] == "CONSUMER_HOST_BROKER_URL"]
        assert "value" not in broker
        assert broker["valueFrom"]["secretKeyRef"] == {
            "name": "shop-broker",
            "key": "CLOUDAMQP_URL",
        }

    def test_an_inline_url_goes_into_a_secret_the_chart_owns_never_into_env(self):
        url = "amqp://shop:s3cret@rabbitmq:5672/shop"
        docs = render({**BASE, "broker": {"url": url}})
        [secret] = of_kind(docs, "Secret")
        assert secret["stringData"] == {"broker-url": url}
        rendered = yaml.safe_dump([d for d in docs if d["kind"] != "Secret"])
        assert "s3cret" not in rendered
        [broker] = [e for e in container(docs)["env"] if e["name"] == "CONSUMER_HOST_BROKER_URL"]
        assert broker["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]

    def test_no_broker_at_all_is_refused(self):
        with pytest.raises(helm.HelmRenderError, match="broker"):
            render({"app": "shop:host"})


class TestScaling:
    def test_hpa_and_keda_are_never_both_rendered(self):
        with pytest.raises(helm.HelmRenderError, match="mutually exclusive"):
            render(
                {
                    **BASE,
                    "autoscaling": {"enabled": True},
                    "keda": {"enabled": True, "rabbitmq": {"enabled": True, "queueName": "q"}},
                }
            )
        for variant in VARIANTS:
            docs = render(yaml.safe_load(variant.read_text()))
            assert not (of_kind(docs, "HorizontalPodAutoscaler") and of_kind(docs, "ScaledObject"))

    def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(self):
        for name in ("hpa-values", "keda-rabbitmq-values", "keda-redis-values"):
            docs = render(yaml.safe_load((CHART / "ci" / f"{name}.yaml").read_text()))
            assert "replicas" not in the_deployment(docs)["spec"], name

    def test_keda_on_a_rabbitmq_queue(self):
        docs = render(yaml.safe_load((CHART / "ci" / "keda-rabbitmq-values.yaml").read_text()))
        [scaled] = of_kind(docs, "ScaledObject")
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        assert scaled["spec"]["scaleTargetRef"]["name"] == the_deployment(docs)["metadata"]["name"]
        assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (2, 20)
        [trigger] = scaled["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == "orders"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), "KEDA wants strings"
        [auth] = of_kind(docs, "TriggerAuthentication")
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert auth["spec"]["secretTargetRef"] == [
            {"parameter": "host", "name": "shop-broker", "key": "CLOUDAMQP_URL"}
        ]

    def test_keda_on_a_redis_list(self):
        docs = render(yaml.safe_load((CHART / "ci" / "keda-redis-values.yaml").read_text()))
        [scaled] = of_kind(docs, "ScaledObject")
        [trigger] = scaled["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == "orders"
        assert trigger["metadata"]["listLength"] == "100"
        assert trigger["metadata"]["address"] == "redis-master:6379"
        assert all(isinstance(v, str) for v in trigger["metadata"].values())
        [auth] = of_kind(docs, "TriggerAuthentication")
        assert auth["spec"]["secretTargetRef"][0]["parameter"] == "password"
        assert scaled["spec"]["minReplicaCount"] == 0

    @pytest.mark.parametrize("data_password", [True, False], ids=["both", "sentinels-only"])
    def test_keda_on_a_sentinel_set_gets_the_sentinels_password(self, data_password):
        """Sentinels started with their own requirepass (the URL's ``sentinel_password=``)
        answer KEDA only with it: the TriggerAuthentication carries ``sentinelPassword``."""
        redis = {
            "enabled": True,
            "listName": "orders",
            "sentinelPasswordSecret": {"name": "sentinels", "key": "password"},
        }
        if data_password:
            redis["passwordSecret"] = {"name": "redis", "key": "redis-password"}
        url = "redis://s1:26379,s2:26379/0?sentinel=mymaster&sentinel_password=sp"
        docs = render({**BASE, "broker": {"url": url}, "keda": {"enabled": True, "redis": redis}})
        [auth] = of_kind(docs, "TriggerAuthentication")
        refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        expected = {"sentinelPassword": ("sentinels", "password")}
        if data_password:
            expected["password"] = ("redis", "redis-password")
        assert refs == expected
        [trigger] = of_kind(docs, "ScaledObject")[0]["spec"]["triggers"]
        assert trigger["type"] == "redis-sentinel"
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert "sp" not in yaml.safe_dump(trigger)

    def test_a_password_secret_without_its_key_is_refused(self):
        redis = {
            "enabled": True,
            "listName": "orders",
            "address": "s1:26379",
            "type": "redis-sentinel",
            "sentinelMaster": "mymaster",
            "sentinelPasswordSecret": {"name": "sentinels"},
        }
        with pytest.raises(helm.HelmRenderError, match=r"sentinelPasswordSecret\.key"):
            render({**BASE, "keda": {"enabled": True, "redis": redis}})

    def test_keda_without_a_trigger_is_refused(self):
        with pytest.raises(helm.HelmRenderError, match=r"keda\.rabbitmq\.enabled"):
            render({**BASE, "keda": {"enabled": True}})

    def test_a_pdb_only_where_more_than_one_replica_can_run(self):
        assert of_kind(render(BASE), "PodDisruptionBudget")
        assert not of_kind(render({**BASE, "replicaCount": 1}), "PodDisruptionBudget")
        [pdb] = of_kind(render(BASE), "PodDisruptionBudget")
        assert pdb["spec"]["maxUnavailable"] == 1


class TestMonitorsAndExtras:
    def test_pod_and_service_monitors_scrape_metrics_on_the_health_port(self):
        docs = render(yaml.safe_load((CHART / "ci" / "monitors-values.yaml").read_text()))
        [pod_monitor] = of_kind(docs, "PodMonitor")
        [endpoint] = pod_monitor["spec"]["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("health", "/metrics")
        assert pod_monitor["metadata"]["labels"]["release"] == "prometheus"
        [service_monitor] = of_kind(docs, "ServiceMonitor")
        assert service_monitor["spec"]["endpoints"][0]["port"] == "health"
        [service] = of_kind(docs, "Service")
        assert service["spec"]["selector"] == pod_monitor["spec"]["selector"]["matchLabels"]
        pod = the_deployment(docs)["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
        assert pod["tolerations"][0]["key"] == "workers"
        assert container(docs)["envFrom"] == [{"configMapRef": {"name": "shop-config"}}]

    def test_helm_test_pod_runs_check(self):
        docs = render(BASE)
        [test_pod] = [
            d
            for d in of_kind(docs, "Pod")
            if d["metadata"]["annotations"]["helm.sh/hook"] == "test"
        ]
        [main] = test_pod["spec"]["containers"]
        assert main["args"] == ["check", "shop.consumers:host"]


class TestSchema:
    @pytest.mark.parametrize(
        "bad",
        [
            {"replicaCount": "3"},
            {"drainTimeout": "25s"},
            {"broker": {"url": "http://not-a-broker"}},
            {"health": {"port": 0}},
            {"keda": {"rabbitmq": {"mode": "Lots"}}},
        ],
        ids=["string-replicas", "string-drain", "http-broker", "port-0", "keda-mode"],
    )
    def test_values_schema_rejects_wrong_types(self, bad):
        with pytest.raises(helm.HelmValuesError):
            render({**BASE, **bad})

    def test_the_chart_readme_documents_every_top_level_value(self):
        readme = (CHART / "README.md").read_text()
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        missing = [key for key in values if f"`{key}" not in readme]
        assert missing == []


class TestHeroku:
    def test_procfile_lines_name_commands_the_cli_has(self):
        lines = [ln for ln in (ROOT / "Procfile").read_text().splitlines() if ln.strip()]
        processes = dict(ln.split(":", 1) for ln in lines)
        assert set(processes) == {"worker", "release"}
        for command in processes.values():
            argv = shlex.split(command)
            assert argv[0] == "consumer-host"
            assert argv[1] in cli.commands
            assert (ROOT / argv[2]).is_file()

    def test_app_json_has_the_fields_heroku_reads(self):
        app = json.loads((ROOT / "app.json").read_text())
        assert app["name"]
        assert app["formation"]["worker"]["quantity"] >= 1
        assert "CONSUMER_HOST_DRAIN_TIMEOUT" in app["env"]
        assert int(app["env"]["CONSUMER_HOST_DRAIN_TIMEOUT"]["value"]) < 30
        assert all(re.fullmatch(r"[A-Z_]+", name) for name in app["env"])
        assert app["buildpacks"][0]["url"] == "heroku/python"


class TestDockerfile:
    def test_dockerfile_runs_the_cli_as_a_non_root_user(self):
        text = (ROOT / "Dockerfile").read_text()
        assert re.search(r"^FROM python:3\.\d+-slim", text, re.M)
        user = re.findall(r"^USER (\S+)", text, re.M)
        assert user
        assert user[-1] not in ("root", "0")
        assert 'ENTRYPOINT ["consumer-host"]' in text
        assert re.search(r"^CMD \[\"run\"", text, re.M)
        assert re.search(r"^EXPOSE 8080", text, re.M)


class TestClusterUrls:
    """Every broker URL form the host reads passes the chart's validation, and the KEDA Redis
    trigger follows the URL (issue 22)."""

    @pytest.mark.parametrize(
        "url",
        [
            "amqp://shop:s3cret@rabbitmq:5672/shop",
            "amqp://u:p@n1:5672//;amqp://u:p@n2:5672//;amqp://u:p@n3:5672//",
            "amqps://u:p@n1:5671//;amqps://u:p@n2:5671//",
            "redis://:p@redis:6379/0",
            "rediss://:p@redis:6380/0",
            "redis+streams://redis:6379/0",
            "rediss+streams://:p@redis:6380/0",
            "redis://:p@s1:26379,s2:26379,s3:26379/0?sentinel=mymaster",
            "rediss+streams://:p@s1:26379,s2:26379/0?sentinel=mymaster&sentinel_password=sp",
            "redis://:p@c1:6379,c2:6379/0?cluster=true",
            "rediss+streams://c1:6379/0?cluster=true",
        ],
    )
    def test_every_url_form_is_accepted(self, url):
        docs = render({**BASE, "broker": {"url": url}})
        [secret] = of_kind(docs, "Secret")
        assert secret["stringData"] == {"broker-url": url}

    @pytest.mark.parametrize(
        "url",
        [
            "http://redis:6379/0",
            "amqp://n1//;redis://n2:6379/0",
            "redis://n1:6379/0;redis://n2:6379/0",
            "kafka://broker:9092",
        ],
    )
    def test_what_the_host_cannot_read_is_refused(self, url):
        with pytest.raises(helm.HelmValuesError):
            render({**BASE, "broker": {"url": url}})

    @pytest.mark.parametrize(
        ("url", "kind", "address"),
        [
            ("redis://:p@redis:6379/0", "redis", "redis:6379"),
            ("redis+streams://redis:6379/0", "redis-streams", "redis:6379"),
            (
                "redis://:p@s1:26379,s2:26379/0?sentinel=mymaster",
                "redis-sentinel",
                "s1:26379,s2:26379",
            ),
            ("rediss+streams://s1:26379/0?sentinel=mymaster", "redis-sentinel-streams", "s1:26379"),
            ("redis://c1:6379,c2:6379/0?cluster=true", "redis-cluster", "c1:6379,c2:6379"),
            ("redis+streams://c1:6379/0?cluster=true", "redis-cluster-streams", "c1:6379"),
        ],
    )
    def test_the_keda_trigger_follows_the_url(self, url, kind, address):
        keda = {"enabled": True, "redis": {"enabled": True, "listName": "orders"}}
        docs = render({**BASE, "broker": {"url": url}, "keda": keda})
        [trigger] = of_kind(docs, "ScaledObject")[0]["spec"]["triggers"]
        assert trigger["type"] == kind
        meta = trigger["metadata"]
        assert meta.get("address", meta.get("addresses")) == address
        assert ("addresses" in meta) is ("sentinel" in kind or "cluster" in kind)
        assert meta.get("sentinelMaster") == ("mymaster" if "sentinel" in kind else None)
        if kind.endswith("-streams"):
            assert (meta["stream"], meta["consumerGroup"]) == ("orders", "orders")
        else:
            assert meta["listName"] == "orders"
        assert ("databaseIndex" in meta) is ("cluster" not in kind)
        assert meta["enableTLS"] == ("true" if url.startswith("rediss") else "false")
        assert all(isinstance(v, str) for v in meta.values()), "KEDA wants strings"
        for manifest in docs:
            if manifest["kind"] != "ScaledObject":
                continue
            assert ":p@" not in yaml.safe_dump(manifest)

    def test_an_existing_secret_needs_the_trigger_spelled_out(self):
        keda = {"enabled": True, "redis": {"enabled": True, "listName": "orders"}}
        with pytest.raises(helm.HelmRenderError, match=r"keda\.redis\.address is required"):
            render({**BASE, "keda": keda})
        keda["redis"].update(type="redis-cluster", address="c1:6379")
        [trigger] = of_kind(render({**BASE, "keda": keda}), "ScaledObject")[0]["spec"]["triggers"]
        assert (trigger["type"], trigger["metadata"]["addresses"]) == ("redis-cluster", "c1:6379")
