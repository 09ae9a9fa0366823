import AgentProtocol
import CX11
import LinuxSystem
#if canImport(Glibc)
import Glibc
#endif

/// X events, answering X programs while we hold a selection for the client,
/// and reading and writing window properties (INCR included, ICCCM §2.7.2).
extension X11Connection {
    @inline(never)
    func handle(_ event: inout XEvent) {
        let type = event.type
        if type == fixesEventBase + CX11_FIXES_SELECTION_NOTIFY {
            let e = cx11_fixes_selection(&event)!.pointee
            guard let selection = selection(of: e.selection) else { return }
            if e.owner == window && Int32(e.subtype) == CX11_FIXES_SET_OWNER {
                state(selection).ownedSince = e.selection_timestamp
                return
            }
            let gone = Int32(e.subtype) != CX11_FIXES_SET_OWNER || e.owner == 0
            ownerChanged(selection, to: gone ? 0 : e.owner, time: e.selection_timestamp)
        } else if type == CX11_SELECTION_REQUEST {
            let e = cx11_selection_request(&event)!.pointee
            selectionRequested(e)
        } else if type == CX11_SELECTION_CLEAR {
            let e = cx11_selection_clear(&event)!.pointee
            // Stale if we took the selection again since.
            if let selection = selection(of: e.selection), XGetSelectionOwner(display, e.selection) != window {
                dropClientOwnership(selection)
            }
        } else if type == CX11_SELECTION_NOTIFY {
            let e = cx11_selection(&event)!.pointee
            guard e.requestor == window, let selection = selection(of: e.selection) else { return }
            let forFetch = state(selection).fetch?.target == e.target
            if e.property == 0 {
                // Refused: the property names which conversion it was only when granted, so go by target.
                if e.target == atom("TARGETS") { offer(selection, targets: []) } else if forFetch { finishFetch(selection, data: nil) }
            } else if e.property == property(selection, targets: true) {
                targetsArrived(selection)
            } else if e.property == property(selection, targets: false) && forFetch {
                dataArrived(selection)
            }
        } else if type == CX11_PROPERTY_NOTIFY {
            let e = cx11_property(&event)!.pointee
            if e.window == window {
                if Int32(e.state) == CX11_PROPERTY_NEW_VALUE {
                    for selection in [VDAgentSelection.clipboard, .primary]
                    where e.atom == property(selection, targets: false) && state(selection).fetch?.incr != nil {
                        incrPieceArrived(selection)
                    }
                }
            } else if Int32(e.state) == CX11_PROPERTY_DELETE {
                continueSend(requestor: e.window, property: e.atom)
            }
        }
    }

    /// A guest program took `selection` (or, with 0, nobody owns it now).
    @inline(never)
    func ownerChanged(_ selection: VDAgentSelection, to newOwner: Window, time: Time) {
        // Stale if we took the selection again since.
        if newOwner != 0 && XGetSelectionOwner(display, selectionAtom(selection)) == window { return }
        state(selection).owner = newOwner
        state(selection).offered = [:]
        if newOwner == 0 {
            if state(selection).offeredToClient {
                state(selection).offeredToClient = false
                client?.withdraw(selection)
            }
            return
        }
        // The client's grab of it is over.
        dropClientOwnership(selection)
        XConvertSelection(display, selectionAtom(selection), atom("TARGETS"), property(selection, targets: true), window,
                          time == 0 ? Time(CurrentTime) : time)
    }

    @inline(never)
    func targetsArrived(_ selection: VDAgentSelection) {
        let p = readProperty(window, property(selection, targets: true))
        let targets: [String] = p?.format == 32 ? p!.longs.compactMap { name(Atom($0)) } : []
        offer(selection, targets: targets)
    }

    @inline(never)
    func offer(_ selection: VDAgentSelection, targets: [String]) {
        guard state(selection).owner != 0 else { return }
        let offer = ClipboardTargets.offer(fromTargets: targets)
        state(selection).offered = Dictionary(offer.map { ($0.type, atom($0.target)) }, uniquingKeysWith: { a, _ in a })
        if offer.isEmpty {
            if state(selection).offeredToClient { client?.withdraw(selection) }
            state(selection).offeredToClient = false
        } else {
            state(selection).offeredToClient = true
            client?.offer(selection, types: offer.map(\.type))
        }
    }

    @inline(never)
    func startFetch(_ selection: VDAgentSelection) {
        while let type = state(selection).clientWants.first {
            guard let target = state(selection).offered[type], state(selection).owner != 0 else {
                state(selection).clientWants.removeFirst()
                client?.deliver(selection, type: .none, data: [])
                continue
            }
            state(selection).fetch = Fetch(target: target, deadline: Int(EventLoop.now()) + Self.conversionTimeoutMs)
            let prop = property(selection, targets: false)
            XDeleteProperty(display, window, prop)
            XConvertSelection(display, selectionAtom(selection), target, prop, window, Time(CurrentTime))
            return
        }
    }

    @inline(never)
    func dataArrived(_ selection: VDAgentSelection) {
        guard state(selection).fetch != nil else { return }
        let prop = property(selection, targets: false)
        guard let p = readProperty(window, prop) else { return finishFetch(selection, data: nil) }
        if p.type == atom("INCR") {
            // Deleting the property (readProperty did) asks the owner for the first piece.
            let announced = p.longs.first.map { Int($0) } ?? 0
            var buffer: [UInt8] = []
            buffer.reserveCapacity(min(announced, 1 << 20))  // the owner's word only: grow past 1 MiB as data comes
            state(selection).fetch!.incr = buffer
            state(selection).fetch!.deadline = Int(EventLoop.now()) + Self.conversionTimeoutMs
        } else {
            finishFetch(selection, data: p.bytes)
        }
    }

    @inline(never)
    func incrPieceArrived(_ selection: VDAgentSelection) {
        guard let p = readProperty(window, property(selection, targets: false)) else { return finishFetch(selection, data: nil) }
        if p.type == 0 { return }  // already read
        if p.bytes.isEmpty {
            finishFetch(selection, data: state(selection).fetch!.incr)
            return
        }
        state(selection).fetch!.incr! += p.bytes
        state(selection).fetch!.deadline = Int(EventLoop.now()) + Self.conversionTimeoutMs
        if state(selection).fetch!.incr!.count > VDAgent.defaultMaxMessageSize {
            Log.info("clipboard: the guest's \(selection) data exceeds \(VDAgent.defaultMaxMessageSize) bytes; refused")
            finishFetch(selection, data: nil)
        }
    }

    /// The conversion for the client's first wanted type is over (nil: failed): answer it, start the next.
    @inline(never)
    func finishFetch(_ selection: VDAgentSelection, data: [UInt8]?) {
        guard state(selection).fetch != nil else { return }
        state(selection).fetch = nil
        guard !state(selection).clientWants.isEmpty else { return }
        let type = state(selection).clientWants.removeFirst()
        client?.deliver(selection, type: data == nil ? .none : type, data: data ?? [])
        startFetch(selection)
    }

    // MARK: Answering X programs (we hold the selection for the client)

    @inline(never)
    func selectionRequested(_ e: XSelectionRequestEvent) {
        let property = e.property == 0 ? e.target : e.property  // obsolete requestors leave it None
        guard let selection = selection(of: e.selection), let types = state(selection).clientTypes,
              let targetName = name(e.target)
        else {
            return notify(e.requestor, e.selection, e.target, 0, e.time)
        }
        switch targetName {
        case "TARGETS":
            let list = ClipboardTargets.targetsList(offering: types).map { Int(bitPattern: atom($0)) }
            change(e.requestor, property, type: atom("ATOM"), longs: list)
            notify(e.requestor, e.selection, e.target, property, e.time)
        case "TIMESTAMP":
            change(e.requestor, property, type: atom("INTEGER"), longs: [Int(state(selection).ownedSince)])
            notify(e.requestor, e.selection, e.target, property, e.time)
        default:
            guard let type = ClipboardTargets.type(forTarget: targetName), types.contains(type) else {
                return notify(e.requestor, e.selection, e.target, 0, e.time)
            }
            let request = XRequest(requestor: e.requestor, selection: e.selection, target: e.target, property: property,
                                   time: e.time, type: type)
            if let data = state(selection).cache[type] { return answer(request, data: data) }
            guard state(selection).waiting.count < Self.maxWaiting else { return refuse(request) }
            state(selection).waiting.append(request)
            askClientForNext(selection)
        }
    }

    func refuse(_ r: XRequest) { notify(r.requestor, r.selection, r.target, 0, r.time) }

    func notify(_ requestor: Window, _ selection: Atom, _ target: Atom, _ property: Atom, _ time: Time) {
        _ = cx11_send_selection_notify(display, requestor, selection, target, property, time)
    }

    /// Writes `data` for `r`: in one property, or with INCR when larger than a chunk.
    @inline(never)
    func answer(_ r: XRequest, data: [UInt8]) {
        // TEXT asks for any text encoding: say which one we wrote.
        let type = name(r.target) == "TEXT" ? atom("UTF8_STRING") : r.target
        guard let chunks = ClipboardTargets.incrChunks(total: data.count, chunkSize: chunkSize) else {
            change(r.requestor, r.property, type: type, bytes: data[...])
            notify(r.requestor, r.selection, r.target, r.property, r.time)
            return
        }
        sends.removeAll { $0.requestor == r.requestor && $0.property == r.property }
        XSelectInput(display, r.requestor, CX11_PROPERTY_CHANGE_MASK)
        change(r.requestor, r.property, type: atom("INCR"), longs: [data.count])
        notify(r.requestor, r.selection, r.target, r.property, r.time)
        sends.append(Send(requestor: r.requestor, property: r.property, type: type, data: data, chunks: chunks,
                          deadline: Int(EventLoop.now()) + Self.conversionTimeoutMs))
    }

    /// The requestor deleted a property: the next INCR piece, or the final empty one.
    @inline(never)
    func continueSend(requestor: Window, property: Atom) {
        guard let i = sends.firstIndex(where: { $0.requestor == requestor && $0.property == property }) else { return }
        var s = sends[i]
        guard s.next < s.chunks.count else {
            // Every piece was taken: the zero-length property ends the transfer.
            change(requestor, property, type: s.type, bytes: [][...])
            sends.remove(at: i)
            stopWatching(requestor)
            return
        }
        change(requestor, property, type: s.type, bytes: s.data[s.chunks[s.next]])
        s.next += 1
        s.deadline = Int(EventLoop.now()) + Self.conversionTimeoutMs
        sends[i] = s
    }

    @inline(never)
    func stopWatching(_ requestor: Window) {
        if !sends.contains(where: { $0.requestor == requestor }) { XSelectInput(display, requestor, CX11_NO_EVENT_MASK) }
    }

    // MARK: Properties

    func change(_ w: Window, _ property: Atom, type: Atom, bytes: ArraySlice<UInt8>) {
        // An empty slice may have no storage: Xlib still wants a pointer.
        let piece = bytes.isEmpty ? [0][0..<0] : bytes
        _ = piece.withContiguousStorageIfAvailable { buf in
            XChangeProperty(display, w, property, type, 8, CX11_PROP_MODE_REPLACE, buf.baseAddress!, Int32(buf.count))
        }
    }

    /// Format 32: Xlib takes C longs.
    func change(_ w: Window, _ property: Atom, type: Atom, longs: [Int]) {
        _ = longs.withUnsafeBytes { raw in
            XChangeProperty(display, w, property, type, 32, CX11_PROP_MODE_REPLACE,
                            raw.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(longs.count))
        }
    }

    struct Property {
        var type: Atom
        var format: Int32
        /// Format 8 data.
        var bytes: [UInt8]
        /// Format 32 data (Xlib hands them over as C longs).
        var longs: [UInt]
    }

    /// Reads a whole property in pieces, then deletes it; nil if it failed or exceeds the clipboard limit.
    @inline(never)
    func readProperty(_ w: Window, _ property: Atom) -> Property? {
        var result = Property(type: 0, format: 0, bytes: [], longs: [])
        var offset = 0  // in 32-bit units, as the protocol counts
        let pieceUnits = 1 << 20  // 4 MiB per round trip
        while true {
            var type: Atom = 0
            var format: Int32 = 0
            var items: UInt = 0
            var after: UInt = 0
            var data: UnsafeMutablePointer<UInt8>?
            let r = XGetWindowProperty(display, w, property, offset, pieceUnits, 0, CX11_ANY_PROPERTY_TYPE, &type, &format,
                                       &items, &after, &data)
            guard r == CX11_SUCCESS else { return nil }
            defer { if let data { XFree(data) } }
            result.type = type
            result.format = format
            if type == 0 { break }  // no such property
            let count = Int(items)
            if let data {
                switch format {
                case 8:
                    result.bytes.append(contentsOf: UnsafeBufferPointer(start: data, count: count))
                case 16:
                    data.withMemoryRebound(to: UInt16.self, capacity: count) { p in
                        for i in 0..<count { result.bytes += [UInt8(p[i] & 0xFF), UInt8(p[i] >> 8)] }
                    }
                default:
                    data.withMemoryRebound(to: UInt.self, capacity: count) { p in
                        result.longs.append(contentsOf: UnsafeBufferPointer(start: p, count: count))
                    }
                }
            }
            if after == 0 { break }
            offset += count * Int(format) / 32
            if result.bytes.count + result.longs.count * 4 > VDAgent.defaultMaxMessageSize { return nil }
        }
        XDeleteProperty(display, w, property)
        return result
    }
}
