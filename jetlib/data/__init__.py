"""The jet data layer: simulate, validate, ingest to the object store, stream back.

``simulate``  Pythia 8 + FastJet quark/gluon jets as detector-like images (HDF5)
``schema``    validation of HDF5 jet-image files (two public layouts)
``splits``    deterministic splits and nested class-balanced label-fraction subsets
``shards``    sparse Parquet shards (lossless)
``store``     local folder or S3/MinIO, atomic writes, retries
``ingest``    HDF5 -> store, manifest last
``manifest``  the committed dataset, ``jetlib inspect``
``loader``    batches as dense tensors on a device, DDP-aware
"""
