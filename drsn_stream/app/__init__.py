"""The composition root: the only room that knows every other one.

``Pipeline`` wires sources -> DSP -> engine -> monitor -> sinks for one run and supervises their
threads and processes; ``shards`` reads ZeroMQ sources with several processes on big hosts;
``cli`` turns flags and config files into a ``RunConfig`` and sinks.
"""
