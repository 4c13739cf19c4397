"""The gateway's planning, pure: what a route is, where routes come from, and the
per-request choice of backend.

* ``routes``      - the runtime types: route table, route, endpoint, failover, timeouts;
* ``routes_file`` - the routes file's schema and loader (and the translations the
  cluster source shares: mapping, failover);
* ``cluster``     - routes from TritonModel/ModelEnsemble objects and their ``status.pods``;
* ``prices``      - the price table and the cost of an answer;
* ``plan``        - which pods to try for one request, and whether to go hosted;
* ``openai_mapping`` - OpenAI requests and answers <-> Triton bodies and outputs.

Read by the ``tritonfleet.gateway`` process; builds on ``desired.triton``; never
imports ``desired.kube``.
"""
