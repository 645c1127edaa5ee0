"""All SQL lives here, one module per concern. Identifiers are derived and quoted; values are bound."""
