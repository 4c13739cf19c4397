"""Dev tooling that stands in for what a real cluster has, shared by the tests, the
demo (``hack/demo.sh``) and the benchmarks (``bench/``):

* ``testbed``     - the local Kubernetes control plane (``hack/testbed/*.sh``) from Python;
* ``pod_runner``  - plays kubelet and kube-proxy for the testbed's Triton and project pods;
* ``image``       - the tritonfleet image from the Dockerfile (``hack/image/``), run with podman;
* ``triton``      - real ``tritonserver`` processes (``hack/triton/install.sh``);
* ``operator``    - the operator as a local process; ``chart`` - the chart helm-installed;
* ``hosted_api``  - a deterministic OpenAI-compatible stand-in for a hosted provider;
* ``s3``, ``http_server`` - moto's S3 server and a local HTTP file server as model sources;
* ``scripts``     - runs the install/build scripts, their progress on stderr.

Nothing here is part of the product package; pytest fixtures wrapping these live in
``tests/support/fixtures.py``.
"""
