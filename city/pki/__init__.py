"""The city's certificate authority: ``timebank pki`` (ADR 0015).

``certs`` makes certificates and CRLs (pure), ``store`` keeps them in the CA's folder,
``command`` is the CLI.
"""
