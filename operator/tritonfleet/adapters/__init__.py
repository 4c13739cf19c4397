"""Adapters: the only code in tritonfleet that talks to the outside world.

Everything above this layer (``handlers``, ``sync``, ``gateway``, ``scaling``)
decides *what* to do from pure plans made in ``desired/``; adapters do the I/O:
the model-file fetchers ``tritonfleet sync`` uses (:mod:`.sources`: S3, HTTP(S),
a mounted PVC, inline files) and, beside them, the clients for the Kubernetes
API, Triton and the hosted OpenAI-compatible APIs.
"""
