/* list.c — intrusive doubly linked lists (libuv's QUEUE idea): moving a
 * delivery between a subscription's ready list and a worker's leases never
 * allocates. A list's head is a sentinel; an unlinked node points to itself. */
#include "broker.h"

void list_init(list_t *l)
{
    l->head.prev = l->head.next = &l->head;
    l->n = 0;
}

void list_push_back(list_t *l, list_node *n)
{
    n->prev = l->head.prev;
    n->next = &l->head;
    l->head.prev->next = n;
    l->head.prev = n;
    l->n++;
}

void list_remove(list_t *l, list_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
    l->n--;
}

list_node *list_pop_front(list_t *l)
{
    if (l->n == 0) return NULL;
    list_node *n = l->head.next;
    list_remove(l, n);
    return n;
}
