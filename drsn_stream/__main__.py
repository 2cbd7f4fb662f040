from drsn_stream.cli import entry

entry()
