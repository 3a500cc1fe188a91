"""Every NATS subject, KV bucket, stream and object-store name that fluster uses, built in one place.

No other module spells a subject. Names that come from users are validated here as subject tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from fluster.protocol.ids import validate_job_id, validate_name

ROOT = "fluster"

# Docker labels on the containers and images fluster makes.
LABEL_JOB = f"{ROOT}.job"
LABEL_ATTEMPT = f"{ROOT}.attempt"
LABEL_WORKER = f"{ROOT}.worker"
LABEL_PYTHON = f"{ROOT}.python"  # on the base image: its Python major.minor

# Queue groups: every controller replica and every server of an actor name shares one.
CONTROLLER_QUEUE = "controller"


@dataclass(frozen=True)
class Subjects:
    """Names for one namespace: ``fluster.<namespace>.*`` subjects and ``fluster_<namespace>_*`` buckets."""

    namespace: str

    def __post_init__(self) -> None:
        validate_name(self.namespace, "namespace")

    @property
    def prefix(self) -> str:
        return f"{ROOT}.{self.namespace}"

    # -- controller ---------------------------------------------------------------------------------
    @property
    def submit(self) -> str:
        return f"{self.prefix}.ctl.submit"

    @property
    def kill(self) -> str:
        return f"{self.prefix}.ctl.kill"

    # Workers talk to the controller on subjects that end in their own id, so that server permissions can
    # let each worker speak only for itself, and the controller checks that a message's worker id is the
    # one its subject names.
    def register(self, worker_id: str) -> str:
        return f"{self.prefix}.ctl.register.{validate_name(worker_id, 'worker id')}"

    def deregister(self, worker_id: str) -> str:
        return f"{self.prefix}.ctl.deregister.{validate_name(worker_id, 'worker id')}"

    def heartbeat(self, worker_id: str) -> str:
        return f"{self.prefix}.ctl.heartbeat.{validate_name(worker_id, 'worker id')}"

    def job_update(self, worker_id: str) -> str:
        return f"{self.prefix}.ctl.update.{validate_name(worker_id, 'worker id')}"

    def credentials(self, worker_id: str) -> str:
        """Where a worker asks for the identity of an attempt it runs (see ``fluster.security.issuer``)."""
        return f"{self.prefix}.ctl.credentials.{validate_name(worker_id, 'worker id')}"

    def from_workers(self, verb: str) -> str:
        """What the controller subscribes to for ``verb`` (register, deregister, heartbeat, update, credentials)."""
        return f"{self.prefix}.ctl.{verb}.*"

    @property
    def controller_all(self) -> str:
        return f"{self.prefix}.ctl.>"

    def sender(self, subject: str) -> str:
        """The worker id that a worker-to-controller subject names (its last token)."""
        return subject.rsplit(".", 1)[-1]

    # -- workers ------------------------------------------------------------------------------------
    def worker_run(self, worker_id: str) -> str:
        return f"{self.prefix}.worker.{validate_name(worker_id, 'worker id')}.run"

    def worker_kill(self, worker_id: str) -> str:
        return f"{self.prefix}.worker.{validate_name(worker_id, 'worker id')}.kill"

    # -- logs ---------------------------------------------------------------------------------------
    def logs(self, job_id: str) -> str:
        return f"{self.prefix}.logs.{validate_job_id(job_id)}"

    @property
    def logs_all(self) -> str:
        return f"{self.prefix}.logs.>"

    # -- actors -------------------------------------------------------------------------------------
    def actor(self, name: str) -> str:
        """The pool subject of actor ``name``: servers answer it in queue group ``name``."""
        return f"{self.prefix}.actor.{validate_name(name, 'actor name')}"

    def actor_endpoint(self, name: str, endpoint_id: str) -> str:
        """The subject of one endpoint of actor ``name``, for direct and broadcast calls."""
        return f"{self.actor(name)}.{validate_name(endpoint_id, 'endpoint id')}"

    def actor_of(self, subject: str) -> str:
        """The actor name that a pool or endpoint subject names."""
        return subject[len(self.prefix) + len(".actor.") :].split(".", 1)[0]

    # -- JetStream ----------------------------------------------------------------------------------
    @property
    def jobs_bucket(self) -> str:
        return f"{ROOT}_{self.namespace}_jobs"

    @property
    def workers_bucket(self) -> str:
        return f"{ROOT}_{self.namespace}_workers"

    @property
    def endpoints_bucket(self) -> str:
        return f"{ROOT}_{self.namespace}_endpoints"

    @property
    def leader_bucket(self) -> str:
        return f"{ROOT}_{self.namespace}_leader"

    @property
    def logs_stream(self) -> str:
        return f"{ROOT}_{self.namespace}_logs"

    @property
    def gangs_bucket(self) -> str:
        """Values the tasks of a job exchange (``fluster.gang.all_gather``)."""
        return f"{ROOT}_{self.namespace}_gangs"

    @property
    def entrypoints_bucket(self) -> str:
        return f"{ROOT}_{self.namespace}_entrypoints"

    @property
    def object_bucket(self) -> str:
        return f"{ROOT}_{self.namespace}_objects"

    # -- observability (fluster.observe, fluster.dashboard) ---------------------------------------
    @property
    def usage_bucket(self) -> str:
        """Per-job resource usage (CPU, memory), keyed by job id, written by the job's worker."""
        return f"{ROOT}_{self.namespace}_usage"

    def metrics(self, component: str, source_id: str) -> str:
        """Where one component (controller, worker, actor, pool) publishes its metrics snapshots."""
        return f"{self.prefix}.metrics.{validate_name(component, 'component')}.{validate_name(source_id, 'source id')}"

    @property
    def metrics_all(self) -> str:
        return f"{self.prefix}.metrics.*.*"

    @property
    def metrics_poll(self) -> str:
        """A request to every component to publish its metrics snapshot now (a dashboard that just started)."""
        return f"{self.prefix}.metrics.poll"


# Object names inside the namespace's object store.
def result_object(job_id: str, task: int = 0) -> str:
    """Where a task's large return value is kept (a single-task job's at ``results/<job id>``)."""
    base = f"results/{validate_job_id(job_id)}"
    return base if task == 0 else f"{base}/task-{task}"


def entrypoint_object(token: str) -> str:
    """A large entrypoint, named by its submission's token (never by job id: a rejected duplicate submission
    must not overwrite the entrypoint of the job that holds the name)."""
    return f"entrypoints/{validate_name(token, 'submit token')}"


def quarantine_object(bucket: str, key: str) -> str:
    """Where an undecodable KV value is kept for a person to look at, instead of being dropped."""
    return f"quarantine/{bucket}/{key}"


def bundle_object(digest: str) -> str:
    return f"bundles/{digest}"


def blob_object(blob_id: str) -> str:
    return f"blobs/{blob_id}"


# -- actor call transfers (large arguments and results) ---------------------------------------------------
# JetStream's own names for what backs a bucket, and the headers a KV write carries (as nats-py writes them)
KV_OPERATION_HEADER = "KV-Operation"
ROLLUP_HEADER = "Nats-Rollup"
MARKER_REASON_HEADER = "Nats-Marker-Reason"  # a delete marker the server left (a TTL expiry)


def kv_stream(bucket: str) -> str:
    """The stream JetStream keeps a KV bucket in."""
    return f"KV_{bucket}"


def object_stream(bucket: str) -> str:
    """The stream JetStream keeps an object store in."""
    return f"OBJ_{bucket}"


def actor_transfer_stream(subjects: Subjects) -> str:
    """The memory stream that carries actor arguments and results too large for one message."""
    return f"{ROOT}_{subjects.namespace}_actor_transfers"


def actor_transfer_subject(subjects: Subjects, transfer_id: str) -> str:
    """The subject whose messages are the chunks of one transfer, in order."""
    return f"{subjects.prefix}.xfer.{validate_name(transfer_id, 'transfer id')}"


def actor_transfer_all(subjects: Subjects) -> str:
    return f"{subjects.prefix}.xfer.*"


def gang_key(job_id: str, attempt: int, round_: int, task: int) -> str:
    """The key of one task's value in one ``all_gather`` of a job's attempt."""
    return f"{validate_job_id(job_id)}.{attempt}.{round_}.{task}"


def gang_pattern(job_id: str, attempt: int, round_: int) -> str:
    return f"{validate_job_id(job_id)}.{attempt}.{round_}.*"
