/*
 * Wire values of QEMU's migration stream and return path, as QEMU 7.2
 * writes them (QEMU-STREAM.md beside this file is normative). Every
 * multi-byte integer on this wire is big-endian. These are QEMU's numbers,
 * fixed by QEMU; the module's own enums (qemu_stream.h) never go on the wire.
 */
#ifndef QEMU_STREAM_WIRE_H
#define QEMU_STREAM_WIRE_H

/* File header: be32 magic, be32 version. */
#define QSW_MAGIC		0x5145564du	/* "QEVM" */
#define QSW_VERSION		3u
#define QSW_VERSION_OLD		2u		/* obsolete since QEMU 2.x */
#define QSW_MULTIFD_MAGIC	0x11223344u	/* first word of a multifd channel */

/* Top-level item types (one byte). */
#define QSW_EOF			0x00
#define QSW_SECTION_START	0x01
#define QSW_SECTION_PART	0x02
#define QSW_SECTION_END		0x03
#define QSW_SECTION_FULL	0x04
#define QSW_SUBSECTION		0x05
#define QSW_VMDESCRIPTION	0x06
#define QSW_CONFIGURATION	0x07
#define QSW_COMMAND		0x08
#define QSW_SECTION_FOOTER	0x7e

/* Subsections of the configuration section, version 1 each. */
#define QSW_SUB_UUID		"configuration/uuid"
#define QSW_SUB_CAPABILITIES	"configuration/capabilities"
#define QSW_SUB_PAGE_BITS	"configuration/target-page-bits"
#define QSW_UUID_LEN		16

/* QEMU_VM_COMMAND sub-commands: be16 cmd, be16 len, len bytes. */
#define QSW_CMD_INVALID			0
#define QSW_CMD_OPEN_RETURN_PATH	1	/* len 0 */
#define QSW_CMD_PING			2	/* len 4: be32 value */
#define QSW_CMD_POSTCOPY_ADVISE		3
#define QSW_CMD_POSTCOPY_LISTEN		4
#define QSW_CMD_POSTCOPY_RUN		5
#define QSW_CMD_POSTCOPY_RAM_DISCARD	6
#define QSW_CMD_PACKAGED		7
#define QSW_CMD_ENABLE_COLO		8
#define QSW_CMD_POSTCOPY_RESUME		9
#define QSW_CMD_RECV_BITMAP		10
#define QSW_CMD_SWITCHOVER_START	11	/* QEMU 10.0 */

/* The "ram" section: idstr "ram", instance 0, version 4. */
#define QSW_RAM_IDSTR		"ram"
#define QSW_RAM_INSTANCE	0u
#define QSW_RAM_VERSION		4u

/* RAM item header: be64 (offset | flags); flags in the low 12 bits. */
#define QSW_RAM_FLAG_BITS	12
#define QSW_RAM_FLAG_MASK	0xfffull
#define QSW_RAM_FULL		0x001	/* obsolete since 2009 */
#define QSW_RAM_ZERO		0x002	/* once named COMPRESS: one fill byte */
#define QSW_RAM_MEM_SIZE	0x004	/* the RAMBlock list follows */
#define QSW_RAM_PAGE		0x008	/* one page of data follows */
#define QSW_RAM_EOS		0x010	/* end of this section's RAM data */
#define QSW_RAM_CONTINUE	0x020	/* same RAMBlock as the last page: no idstr */
#define QSW_RAM_XBZRLE		0x040	/* capability xbzrle */
#define QSW_RAM_HOOK		0x080	/* RDMA's control hook */
#define QSW_RAM_COMPRESS_PAGE	0x100	/* capability compress */
#define QSW_RAM_MULTIFD_FLUSH	0x200	/* multifd, QEMU 8.0 on */

/* Return path (destination -> source): be16 type, be16 len, len bytes. */
#define QSW_RP_INVALID		0
#define QSW_RP_SHUT		1	/* len 4: be32, 0 = success */
#define QSW_RP_PONG		2	/* len 4: be32, the PING's value */
#define QSW_RP_REQ_PAGES_ID	3	/* postcopy */
#define QSW_RP_REQ_PAGES	4	/* postcopy */
#define QSW_RP_RECV_BITMAP	5	/* postcopy recovery */
#define QSW_RP_RESUME_ACK	6	/* len 4: be32 */
#define QSW_RP_SWITCHOVER_ACK	7	/* QEMU 8.1, capability switchover-ack */
#define QSW_RP_HDR_LEN		4
#define QSW_RP_MAX_PAYLOAD	512	/* what QEMU's source reads at most */

#endif
