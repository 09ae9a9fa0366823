// Xlib and XFixes for Swift, plus accessors for the XEvent union members and
// macros Swift does not import. Every helper is prefixed cx11_.
#ifndef CX11_SHIM_H
#define CX11_SHIM_H

#include <X11/Xlib.h>
#include <X11/Xatom.h>
#include <X11/Xutil.h>
#include <X11/extensions/Xfixes.h>

/// Event codes, masks and constants Swift does not import from macros.
static const long CX11_PROPERTY_CHANGE_MASK = PropertyChangeMask;
static const long CX11_NO_EVENT_MASK = NoEventMask;
static const unsigned long CX11_FIXES_SELECTION_MASK =
    XFixesSetSelectionOwnerNotifyMask | XFixesSelectionWindowDestroyNotifyMask | XFixesSelectionClientCloseNotifyMask;
static const int CX11_FIXES_SET_OWNER = XFixesSetSelectionOwnerNotify;
static const int CX11_FIXES_SELECTION_NOTIFY = XFixesSelectionNotify;
static const int CX11_PROPERTY_NOTIFY = PropertyNotify;
static const int CX11_SELECTION_CLEAR = SelectionClear;
static const int CX11_SELECTION_REQUEST = SelectionRequest;
static const int CX11_SELECTION_NOTIFY = SelectionNotify;
static const int CX11_PROPERTY_NEW_VALUE = PropertyNewValue;
static const int CX11_PROPERTY_DELETE = PropertyDelete;
static const int CX11_PROP_MODE_REPLACE = PropModeReplace;
static const int CX11_SUCCESS = Success;
static const Atom CX11_ANY_PROPERTY_TYPE = AnyPropertyType;

static inline XSelectionRequestEvent *cx11_selection_request(XEvent *e) { return &e->xselectionrequest; }
static inline XSelectionEvent *cx11_selection(XEvent *e) { return &e->xselection; }
static inline XSelectionClearEvent *cx11_selection_clear(XEvent *e) { return &e->xselectionclear; }
static inline XPropertyEvent *cx11_property(XEvent *e) { return &e->xproperty; }
static inline XFixesSelectionNotifyEvent *cx11_fixes_selection(XEvent *e) { return (XFixesSelectionNotifyEvent *)e; }

/// Sends the SelectionNotify that answers a SelectionRequest (property None refuses it).
static inline Status cx11_send_selection_notify(Display *dpy, Window requestor, Atom selection, Atom target,
                                                Atom property, Time time) {
    XEvent reply = {0};
    reply.xselection.type = SelectionNotify;
    reply.xselection.display = dpy;
    reply.xselection.requestor = requestor;
    reply.xselection.selection = selection;
    reply.xselection.target = target;
    reply.xselection.property = property;
    reply.xselection.time = time;
    return XSendEvent(dpy, requestor, False, NoEventMask, &reply);
}

#endif
