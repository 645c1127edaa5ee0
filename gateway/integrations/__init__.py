"""Framework integrations, each an optional extra and imported only by who uses it:

    gateway.integrations.langchain   `DriftgateVectorStore` (pip install 'driftgate[langchain]')
    gateway.integrations.llamaindex  `DriftgateVectorStore` (pip install 'driftgate[llamaindex]')
    gateway.integrations.haystack    `DriftgateDocumentStore`, `DriftgateRetriever` (pip install 'driftgate[haystack]')

All three are thin adapters over `gateway.client`: the application sends texts and the gateway
embeds them with the collection's pinned model, so a model migration never touches the app.
Nothing in the gateway's core imports this package.
"""
