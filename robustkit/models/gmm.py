"""Placeholder: the gmm family is being written."""
