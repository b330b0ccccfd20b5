"""The run file: an HDF5 index and a folder of arrays, and the parts stored in it.

Takes in arrays and attributes from the writers (training, the Recorder, probes) and hands
on typed, validated data to the readers. The one owner of the file format:

* :mod:`landscape.runfile.store` -- the only module that touches h5py: transactions,
  crash-safe commits, the sidecar arrays, locks and reads;
* :mod:`landscape.runfile.schema` -- one frozen dataclass per stored probe part, its group
  in the run file and its codec (the only module that knows the keys);
* :mod:`landscape.runfile.windows` -- per-step dynamics windows (``/windows``): where they
  live, rows appended inside a commit, and :class:`~landscape.runfile.windows.Window`.
"""
