"""emo-serve: the renderer behind an HTTP API on Ray Serve.

A FastAPI ingress (one replica: jobs, uploads, results, metrics, the web page) hands renders to a pool of render
replicas (one Renderer each, loaded once; one GPU each on GPU machines). Ray Serve routes, queues and bounds the
work; the same application runs on one laptop or on a multi-node Ray cluster.
"""
