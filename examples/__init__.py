"""Example services built with mlmiddleware."""
