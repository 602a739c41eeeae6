"""TensorBoard event-file reader: Event protos -> :class:`report_gen.readers.types.RunLog`.

Layers: :mod:`report_gen.readers.tfrecord` frames records and reports damage; :mod:`.decode` turns
the ``Event`` protos of one file into values (what is decoded, and what a hostile record cannot do),
with :mod:`.bulk` as the numpy fast path for plain scalars; :mod:`.merge` merges the files of one run
and applies the step policy (sub-folders, order of tags, restarts); :mod:`.read` is the entry point.
"""
from report_gen.readers.events.decode import ALL_KINDS
from report_gen.readers.events.read import is_event_file_name, read_events

__all__ = ["ALL_KINDS", "is_event_file_name", "read_events"]
