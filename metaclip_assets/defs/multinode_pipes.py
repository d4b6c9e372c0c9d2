"""A Dagster Pipes client for multi-node training: submits what training/k8s_multinode.py renders (a JobSet, or an
Indexed Job + headless Service), streams the index-0 pod's log (global rank 0 speaks Pipes) into the run, waits for
the whole job and deletes it on success, failure and run termination.

dagster-k8s' PipesK8sClient launches one bare pod, so the submission is ours; the rest is its pieces: the Pipes
session and env context injector, its pod-log message reader (`PipesK8sClient.consume_pod_logs`) and
`DagsterKubernetesClient`'s pod wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
import kubernetes
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.pipes.utils import PipesEnvContextInjector
from dagster_k8s import PipesK8sClient
from dagster_k8s.client import DagsterK8sError, DagsterKubernetesClient

from metaclip_assets.training import k8s_multinode as mn

FINISHED = {"jobset": ("Completed", "Failed"), "indexed_job": ("Complete", "Failed")}


@dataclass
class K8sApis:
    core: Any  # kubernetes.client.CoreV1Api
    batch: Any  # kubernetes.client.BatchV1Api
    custom: Any  # kubernetes.client.CustomObjectsApi


class PipesK8sMultinodeClient:
    """`run()` = create, stream rank 0, wait, clean up. `apis` replaces the cluster (tests); without it the
    kubernetes config is loaded as PipesK8sClient does (in-cluster, or a kubeconfig)."""

    def __init__(
        self,
        load_incluster_config: bool | None = None,
        kubeconfig_file: str | None = None,
        poll_interval: float = 10.0,
        apis: K8sApis | None = None,
        sleeper: Callable[[float], None] = time.sleep,
    ):
        self.pod_client = PipesK8sClient(
            load_incluster_config=load_incluster_config, kubeconfig_file=kubeconfig_file, poll_interval=poll_interval
        )
        self.poll_interval, self.apis, self.sleeper = poll_interval, apis, sleeper

    def _connect(self) -> tuple[K8sApis, DagsterKubernetesClient]:
        apis = self.apis or self._cluster_apis()
        client = DagsterKubernetesClient(
            batch_api=apis.batch, core_api=apis.core, logger=lambda *_: None, sleeper=self.sleeper, timer=time.time
        )
        return apis, client

    def _cluster_apis(self) -> K8sApis:
        self.pod_client._load_k8s_config()  # dagster-k8s' own config loading (in-cluster or kubeconfig), reused
        return K8sApis(
            kubernetes.client.CoreV1Api(), kubernetes.client.BatchV1Api(), kubernetes.client.CustomObjectsApi()
        )

    def run(
        self,
        *,
        context: dg.AssetExecutionContext,
        extras: Mapping[str, Any],
        render: Callable[[dict[str, str]], mn.Launch],
        env: Mapping[str, str],
        wait_timeout: float = 0,
    ) -> dg.PipesClientCompletedInvocation:
        """`render(env)` gives the objects (env = Pipes bootstrap env + `env`, for every pod); `wait_timeout` in
        seconds for the whole job, 0 = forever."""
        apis, client = self._connect()
        with dg.open_pipes_session(
            context=context,
            extras=dict(extras),
            context_injector=PipesEnvContextInjector(),
            message_reader=self.pod_client.message_reader,
        ) as session:
            launch = render({**session.get_bootstrap_env_vars(), **env})
            deadline = time.time() + wait_timeout if wait_timeout else None
            try:
                self._create(apis, launch)
                context.log.info(
                    f"submitted {launch.engine} {launch.namespace}/{launch.name}; streaming its index-0 pod (rank 0)"
                )
                leader = self._wait_for_leader(apis, launch, deadline)
                try:
                    # waits until the pod is Ready, then follows its log to the end: Pipes messages into the
                    # session, other lines to this process's stdout (the run's compute log)
                    with self.pod_client.consume_pod_logs(
                        context=context, client=client, namespace=launch.namespace, pod_name=leader
                    ):
                        pass
                except DagsterK8sError as e:  # the leader failed before or while streaming
                    self._wait_for_end(apis, launch, deadline)
                    raise RuntimeError(f"{launch.engine} {launch.name}: rank 0's pod {leader} failed: {e}") from e
                self._wait_for_end(apis, launch, deadline)
            except (KeyboardInterrupt, DagsterExecutionInterruptedError):
                context.log.warning(f"run terminated: deleting {launch.engine} {launch.namespace}/{launch.name}")
                raise
            finally:
                self._delete(apis, launch)
        return dg.PipesClientCompletedInvocation(session)

    # ---- the cluster side -----------------------------------------------------------------------------------
    @staticmethod
    def _create(apis: K8sApis, launch: mn.Launch) -> None:
        for obj in launch.objects:
            if obj["kind"] == "JobSet":
                try:
                    apis.custom.create_namespaced_custom_object(
                        mn.JOBSET_GROUP, mn.JOBSET_VERSION, launch.namespace, mn.JOBSET_PLURAL, obj
                    )
                except kubernetes.client.ApiException as e:
                    if e.status == 404:
                        raise RuntimeError(
                            f"the cluster has no JobSet API ({mn.JOBSET_GROUP}/{mn.JOBSET_VERSION}): install the "
                            f"controller with `{mn.JOBSET_INSTALL}`, or set multinode_engine: indexed_job"
                        ) from e
                    raise
            elif obj["kind"] == "Service":
                apis.core.create_namespaced_service(launch.namespace, obj)
            elif obj["kind"] == "Job":
                apis.batch.create_namespaced_job(launch.namespace, obj)
            else:
                raise ValueError(f"don't know how to create a {obj['kind']}")

    @staticmethod
    def _delete(apis: K8sApis, launch: mn.Launch) -> None:
        """Background propagation: the Jobs and pods go with their owner; the call returns at once."""
        for obj in reversed(launch.objects):
            name, ns = obj["metadata"]["name"], launch.namespace
            try:
                if obj["kind"] == "JobSet":
                    apis.custom.delete_namespaced_custom_object(
                        mn.JOBSET_GROUP, mn.JOBSET_VERSION, ns, mn.JOBSET_PLURAL, name, propagation_policy="Background"
                    )
                elif obj["kind"] == "Service":
                    apis.core.delete_namespaced_service(name, ns)
                else:
                    apis.batch.delete_namespaced_job(name, ns, propagation_policy="Background")
            except kubernetes.client.ApiException as e:
                if e.status != 404:  # already gone (ttlSecondsAfterFinished, someone else): fine
                    raise

    def _conditions(self, apis: K8sApis, launch: mn.Launch) -> set[str]:
        if launch.engine == "jobset":
            obj = apis.custom.get_namespaced_custom_object(
                mn.JOBSET_GROUP, mn.JOBSET_VERSION, launch.namespace, mn.JOBSET_PLURAL, launch.name
            )
            conditions = (obj.get("status") or {}).get("conditions") or []
            return {c["type"] for c in conditions if c.get("status") == "True"}
        job = apis.batch.read_namespaced_job(launch.name, launch.namespace)
        return {c.type for c in (job.status.conditions or []) if c.status == "True"}

    def _tick(self, launch: mn.Launch, deadline: float | None, waiting_for: str) -> None:
        if deadline is not None and time.time() > deadline:
            raise RuntimeError(f"timed out waiting for {waiting_for} of {launch.engine} {launch.name}")
        self.sleeper(self.poll_interval)

    def _wait_for_leader(self, apis: K8sApis, launch: mn.Launch, deadline: float | None) -> str:
        """The index-0 pod's name, once the controller has created it."""
        while True:
            pods = apis.core.list_namespaced_pod(launch.namespace, label_selector=launch.leader_selector).items
            if pods:
                return pods[0].metadata.name
            if FINISHED[launch.engine][1] in self._conditions(apis, launch):
                raise RuntimeError(
                    f"{launch.engine} {launch.name} failed before its pods started: {self._failed(apis, launch)}"
                )
            self._tick(launch, deadline, "the index-0 pod")

    def _wait_for_end(self, apis: K8sApis, launch: mn.Launch, deadline: float | None) -> None:
        """Until the job as a whole succeeded (every node) or failed (any pod): rank 0's end is not the job's."""
        done, failed = FINISHED[launch.engine]
        while True:
            conditions = self._conditions(apis, launch)
            if failed in conditions:
                raise RuntimeError(
                    f"{launch.engine} {launch.namespace}/{launch.name} failed: {self._failed(apis, launch)}. "
                    "Re-materialize to resume from the last checkpoint."
                )
            if done in conditions:
                return
            self._tick(launch, deadline, "the end")

    @staticmethod
    def _failed(apis: K8sApis, launch: mn.Launch) -> str:
        """The failed pods with their node index (node n holds global ranks n*gpu_count ...) and exit status."""
        pods = apis.core.list_namespaced_pod(launch.namespace, label_selector=launch.pods_selector).items
        lines = []
        for pod in pods:
            if pod.status.phase != "Failed":
                continue
            node = (pod.metadata.labels or {}).get(mn.COMPLETION_INDEX, "?")
            exits = [
                f"{c.name} exit {c.state.terminated.exit_code} ({c.state.terminated.reason})"
                for c in pod.status.container_statuses or []
                if c.state and c.state.terminated
            ]
            lines.append(f"pod {pod.metadata.name} (node {node}): {', '.join(exits) or pod.status.reason or 'failed'}")
        return "; ".join(lines) or "no failed pod found (see `kubectl describe` of the job)"
