# Test exec handler: prints the descriptors open in the handler process.
import os
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
print(" ".join(str(fd) for fd in range(4096) if is_open(fd)))
