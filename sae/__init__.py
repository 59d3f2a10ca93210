"""Monoscope's science core: corpus, one-layer LM, sparse autoencoders and their analysis.

Importable on its own from a notebook; never imports the web or database layer (`app/`).
"""
