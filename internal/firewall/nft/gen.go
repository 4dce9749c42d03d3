package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// genID asks the kernel for the nftables ruleset generation of the
// namespace: a counter every committed transaction advances (any table's,
// any process's), and that element timeouts expiring do not. Apply uses it
// to trust its cache of the table only while nobody else changed anything
// (see Backend.cache). google/nftables v0.3.0 can parse the answer but not
// ask, so the request goes out on the backend's own socket.
func (b *Backend) genID() (uint32, error) {
	if b.nl == nil {
		return 0, fmt.Errorf("asking the ruleset generation: no netlink socket")
	}
	b.genReads++
	msgs, err := b.nl.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}, // struct nfgenmsg
	})
	if err != nil {
		return 0, fmt.Errorf("asking the ruleset generation: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN) || len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("decoding the ruleset generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
		if err := ad.Err(); err != nil {
			return 0, fmt.Errorf("decoding the ruleset generation: %w", err)
		}
	}
	return 0, fmt.Errorf("asking the ruleset generation: no generation in the answer")
}
