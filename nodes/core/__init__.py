"""What every model family shares: sampling loops and samplers, ``Conditioning`` and the backend
protocols, checkpoint reading and identity, the handles common to all, the family contract and
registry, and the model manager.  It declares no node and names no family: families build on it
(``nodes/families/``), and the stage nodes call it."""
