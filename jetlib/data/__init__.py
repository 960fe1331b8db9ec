"""The jet data layer: simulate, validate, ingest to the object store, stream back.

``simulate``  Pythia 8 + FastJet quark/gluon jets as detector-like images (HDF5)
``simcache``  simulated files kept by their settings under $JETLIB_CACHE
``schema``    validation of HDF5 jet-image files (two public layouts)
``splits``    deterministic splits and nested class-balanced label-fraction subsets
``shards``    sparse Parquet shards (lossless)
``keys``      the grammar of keys and hashes read back (nothing read back chooses a path)
``store``     local folder, the store contract, atomic writes, confined keys
``s3``        S3/MinIO: retries, bounded timeouts, conditional writes
``validate``  a manifest checked whole before anything uses it
``ingest``    HDF5 -> store, manifest last
``manifest``  the committed dataset, ``jetlib inspect``
``loader``    batches as dense tensors on a device, DDP-aware
"""
