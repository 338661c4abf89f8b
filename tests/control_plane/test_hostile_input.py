J = {"content-type": "application/json"}

async def test_probe(api, tenant_app):
    for d in [100, 500, 900, 1000, 2000, 5000, 10000]:
        r = await api.post("/v1/tenants", content=b"[" * d + b"]" * d, headers=J)
        print("RESULT depth", d, r.status_code, r.json()["code"])
        r = await api.post("/v1/tenants", content=b'{"a":' * d + b"1" + b"}" * d, headers=J)
        print("RESULT depthobj", d, r.status_code, r.json()["code"])
    for body in [b'{"slug": "abcdefg", "name": "\xff"}', b'{"slug": "abcdefg", "name": "\xc3"}', b'{"slug": "abcdefg\xff", "name": "x"}', b'{"\xff": 1}', b'\xef\xbb\xbf{}', b'{"slug": "abcdefg", "name": "x"}\x00']:
        r = await api.post("/v1/tenants", content=body, headers=J)
        print("RESULT utf", body, r.status_code, r.json()["code"], r.json()["detail"])
    for body in [b'{"name": "\xff"}']:
        r = await api.patch("/v1/tenants/nosuch", content=body, headers=J)
        print("RESULT utf patch", body, r.status_code, r.json()["code"])
    import sys; print("RESULT reclimit", sys.getrecursionlimit())
