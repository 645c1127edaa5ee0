"""Pure domain logic: plain values in, plain values out. Imports nothing else from the package."""
