/* peer: who is at the other end of a loopback TCP connection.
 *
 * The Runtime API (rtapi.c) listens on 127.0.0.1, where any local process can
 * connect; the supervisor admits only the runtime's own processes. Linux says
 * which socket inode is the client's end (/proc/net/tcp, /proc/net/tcp6 for
 * a v4-mapped client), and which processes hold it (/proc/PID/fd).
 */
#ifndef HERALD_PEER_H
#define HERALD_PEER_H

#include <stdbool.h>
#include <sys/types.h>

/* True iff conn_fd (a connection we accepted on an IPv4 loopback listener)
 * was made from a socket held by root or one of its descendants. False on
 * any doubt: the socket not found, /proc unreadable, another user's process
 * (its fds cannot be read), or a tree of more than PEER_TREE_MAX processes. */
bool peer_in_tree(int conn_fd, pid_t root);

#define PEER_TREE_MAX 4096      /* processes looked at; a runtime tree is a handful */

#endif
