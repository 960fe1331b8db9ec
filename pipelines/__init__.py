"""The KFP pipeline (jet_ssl) and the local demo runner."""
