"""Hostile XML shared by the define.xml and ODM reader tests: the entity declarations of
a "billion laughs" document (ten levels, each entity ten copies of the one below)."""

LAUGH_ENTITIES = "\n".join(
    [' <!ENTITY lol "lol">']
    + [f' <!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">' for n in range(1, 10)]
)
