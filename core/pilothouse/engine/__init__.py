"""The engine: flows, steps, model calls and oversight, under a crew's limits.

``runs`` drives a run through its flow; a step's parts live beside it (``calls``,
``oversight``, ``context``, ``handoffs``, ``escalation``, ``evidence``), with the run's state
in ``runstate``. It imports the vocabulary, the store and the knowledge base; never an interface.
"""
