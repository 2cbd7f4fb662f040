"""Cluster mode: the same monitor on many hosts, supervised by Ray (``pip install drsn-stream[cluster]``).

Only ``drsn_stream.cluster.ray_app`` and ``drsn_stream.cluster.cli`` import Ray; the rest
(hash ring, checkpoint store, shard source, host worker, aggregator) is plain Python, so the
single-machine monitor never loads Ray and these parts are tested without it. See docs/cluster.md.
"""
