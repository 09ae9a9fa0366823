import Testing
@testable import AgentProtocol

/// X11 selection targets <-> SPICE clipboard types, and INCR chunking.
@Suite struct ClipboardTargetsTests {
    @Test func textTargetsMapToUTF8AndPNGToImage() {
        for name in ["UTF8_STRING", "text/plain;charset=utf-8", "STRING", "TEXT", "text/plain"] {
            #expect(ClipboardTargets.type(forTarget: name) == .utf8Text, "\(name)")
        }
        #expect(ClipboardTargets.type(forTarget: "image/png") == .imagePNG)
        // Only text and PNG are carried; bookkeeping targets map to nothing.
        for name in ["TARGETS", "TIMESTAMP", "MULTIPLE", "image/bmp", "image/jpeg", "text/html", "SAVE_TARGETS"] {
            #expect(ClipboardTargets.type(forTarget: name) == nil, "\(name)")
        }
    }

    @Test func anOwnersTargetsBecomeAnOfferInPreferenceOrder() {
        // What Firefox offers for an image with a caption, roughly: PNG listed before text.
        let offer = ClipboardTargets.offer(fromTargets: ["TIMESTAMP", "TARGETS", "image/png", "text/html", "STRING",
                                                          "UTF8_STRING", "text/plain"])
        #expect(offer.map(\.type) == [.utf8Text, .imagePNG])
        // The preferred spelling wins over the owner's order: UTF8_STRING before STRING.
        #expect(offer.first?.target == "UTF8_STRING")
        #expect(ClipboardTargets.offer(fromTargets: ["STRING", "TARGETS"]).map(\.target) == ["STRING"])
        #expect(ClipboardTargets.offer(fromTargets: ["TARGETS", "text/uri-list"]).isEmpty)
        #expect(ClipboardTargets.offer(fromTargets: []).isEmpty)
    }

    @Test func targetsListOffersBookkeepingAndTheClientsTypes() {
        #expect(ClipboardTargets.targetsList(offering: [.utf8Text]) ==
            ["TARGETS", "TIMESTAMP", "UTF8_STRING", "text/plain;charset=utf-8", "STRING", "TEXT", "text/plain"])
        #expect(ClipboardTargets.targetsList(offering: [.imagePNG, .imageBMP]) == ["TARGETS", "TIMESTAMP", "image/png"])
    }

    @Test func chunkSizeFollowsTheServersRequestLimitWithACap() {
        // Xvfb/Xorg with BIG-REQUESTS: 4194303 units (16 MiB) -> the cap.
        #expect(ClipboardTargets.chunkSize(maxRequestUnits: 65535, extendedMaxRequestUnits: 4_194_303) == 256 << 10)
        // Without BIG-REQUESTS: 65535 units = 262140 bytes, less the margin.
        #expect(ClipboardTargets.chunkSize(maxRequestUnits: 65535, extendedMaxRequestUnits: 0) == 262_140 - 256)
        // A tiny server limit still leaves a usable chunk.
        #expect(ClipboardTargets.chunkSize(maxRequestUnits: 4096, extendedMaxRequestUnits: 0) == 16384 - 256)
        #expect(ClipboardTargets.chunkSize(maxRequestUnits: 10, extendedMaxRequestUnits: 0) == 1024)
    }

    @Test func incrChunksCoverTheDataExactlyOnce() throws {
        #expect(ClipboardTargets.incrChunks(total: 0, chunkSize: 1000) == nil)
        #expect(ClipboardTargets.incrChunks(total: 1000, chunkSize: 1000) == nil)
        #expect(ClipboardTargets.incrChunks(total: 1001, chunkSize: 1000) == [0..<1000, 1000..<1001])
        let fiveMiB = 5 << 20
        let chunks = try #require(ClipboardTargets.incrChunks(total: fiveMiB, chunkSize: 256 << 10))
        #expect(chunks.count == 20)
        #expect(chunks.first == 0..<(256 << 10))
        #expect(chunks.last?.upperBound == fiveMiB)
        #expect(zip(chunks, chunks.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
    }
}
