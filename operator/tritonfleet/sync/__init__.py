"""``tritonfleet sync``: the data-plane process that puts a model's files into
Triton's model repository.

The operator runs it as a Job on the repository volume (and once more, with
``--remove``, when a TritonModel is deleted); people can run it by hand outside
Kubernetes. It sits above ``adapters`` (fetching) and ``desired`` (the layout
and version plan): the command itself (arguments, YAML, exit codes) is
``tritonfleet.cli.sync``; here :mod:`.run` sequences one sync, :mod:`.publish`
moves files into place atomically, :mod:`.logfmt` prints ``kubectl logs``-friendly
lines.
"""

from tritonfleet.sync.run import SyncOutcome, SyncRequest, remove_model, sync_model

__all__ = ["SyncOutcome", "SyncRequest", "remove_model", "sync_model"]
