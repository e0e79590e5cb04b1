"""Placeholder: the svm family is being written."""
