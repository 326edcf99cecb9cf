"""Data: reading tables from disk or the hub, and (``mathrecipe data build``) the recipe's training sets."""
