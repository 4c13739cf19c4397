"""The operator's planning: from a TritonModel/ModelEnsemble and what the watches
saw, the Kubernetes children to apply, the status to write and the Events to post.

Read by ``handlers`` (reconcile, loader) and ``scaling`` (collector, scale to zero),
both through one parsed view of each object (``views``, shared by the operator
process); builds on ``desired.triton``; never imports ``desired.gateway``.
"""
