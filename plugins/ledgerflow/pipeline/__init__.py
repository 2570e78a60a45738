"""The pipeline's steps as plain functions over connections and clients: produce, clear, settle.

Operators in ledgerflow.operators open the connections through the providers' hooks and call these;
tests call them directly against the real services too.
"""
