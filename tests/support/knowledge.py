"""A small knowledge base for tests of the providers and calls that read one.

A short greeting keeps calls fast: the scripted and fake voices speak 55 ms per character.
"""

KNOWLEDGE = """
[property]
name = "Casa Turia"
host = "Marta"
city = "Valencia"

[greeting]
en = "Hi, I'm Sandra."
es = "Hola, soy Sandra."

[[entry]]
id = "check_in"
answer = { en = "Check-in is from three in the afternoon.", es = "La entrada es a partir de las tres de la tarde." }
questions = { en = ["What time is check-in?"], es = ["¿A qué hora es la entrada?"] }
keywords = { en = ["check-in", "arrival"], es = ["entrada", "llegada"] }

[[entry]]
id = "wifi"
answer = { en = "The wifi is CasaTuria, password naranja2024.", es = "La wifi es CasaTuria, contraseña naranja2024." }
questions = { en = ["What is the wifi password?"], es = ["¿Cuál es la contraseña del wifi?"] }
keywords = { en = ["wifi", "internet"], es = ["wifi", "internet"] }
"""
