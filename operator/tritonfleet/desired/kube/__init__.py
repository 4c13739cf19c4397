"""The operator's planning: from a TritonModel/ModelEnsemble and what the watches
saw, the Kubernetes children to apply, the status to write and the Events to post.

Read by ``handlers`` (reconcile, loader) and ``scaling`` (collector, scale to zero);
builds on ``desired.triton``; never imports ``desired.gateway``.
"""
