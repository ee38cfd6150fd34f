# Test exec handler: allocates 512 MiB (a MemoryError under memory_mb = 64).
b = bytearray(512 * 1024 * 1024)
print(len(b))
