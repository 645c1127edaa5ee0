"""Use cases: what the API asks for, in terms of the store and the encoders."""
