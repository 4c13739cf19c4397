"""Pure functions from spec (and observed state) to desired state: Triton
``config.pbtxt`` text, revisions and, as the reconciler grows, Kubernetes
objects. No I/O here, so every rule is unit-tested exhaustively.
"""
