"""The application runner's vocabulary-neutral half: call-application verbs
(:mod:`.verbs`), safe document reading (:mod:`.document`) and attribute conversion
(:mod:`.attributes`), the executor (:mod:`.executor`), what it needs from a call
(:mod:`.control`) and where its audio comes from (:mod:`.sources`).

A vocabulary (each API dialect's XML: element and attribute names, defaults, the names of
its result parameters) parses a document into a :class:`~.verbs.Document` that the executor
runs.
"""
