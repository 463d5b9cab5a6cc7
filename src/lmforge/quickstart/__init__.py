"""The quickstart: the whole life cycle of a tiny model on a CPU, nothing downloaded."""
