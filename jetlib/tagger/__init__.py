"""A trained model as a tagger other software can use: ``jetlib predict`` (Parquet scores),
``jetlib export`` (ONNX with a model card) and ``jetlib serve`` (a KServe model server).

``load`` rebuilds a model as one function of raw pixel energies; ``predict``, ``export`` and
``serve`` use it; ``card`` writes the model card; ``select`` picks the model a pipeline run exports.
Kept light: importing the package imports nothing heavy (``jetlib --help`` reads ``cli``).
"""
