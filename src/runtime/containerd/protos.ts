/**
 * The parts of containerd's gRPC API (v1.6) this agent calls, written out by hand: only the services,
 * methods and fields used here. Field numbers and names follow containerd's api/ directory, which is the
 * wire contract; anything left out is simply skipped by the decoder.
 */

const TYPES = `
syntax = "proto3";
package containerd.types;

message Descriptor {
  string media_type = 1;
  string digest = 2;
  int64 size = 3;
  map<string, string> annotations = 5;
}

message Mount {
  string type = 1;
  string source = 2;
  string target = 3;
  repeated string options = 4;
}
`;

const CONTENT = `
syntax = "proto3";
package containerd.services.content.v1;
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";

service Content {
  rpc Info(InfoRequest) returns (InfoResponse);
  rpc Update(UpdateRequest) returns (UpdateResponse);
  rpc List(ListContentRequest) returns (stream ListContentResponse);
  rpc Delete(DeleteContentRequest) returns (google.protobuf.Empty);
  rpc Read(ReadContentRequest) returns (stream ReadContentResponse);
  rpc Write(stream WriteContentRequest) returns (stream WriteContentResponse);
  rpc Abort(AbortRequest) returns (google.protobuf.Empty);
}

message Info {
  string digest = 1;
  int64 size = 2;
  map<string, string> labels = 5;
}
message InfoRequest { string digest = 1; }
message InfoResponse { Info info = 1; }
message UpdateRequest { Info info = 1; google.protobuf.FieldMask update_mask = 2; }
message UpdateResponse { Info info = 1; }
message ListContentRequest { repeated string filters = 1; }
message ListContentResponse { repeated Info info = 1; }
message DeleteContentRequest { string digest = 1; }
message ReadContentRequest { string digest = 1; int64 offset = 2; int64 size = 3; }
message ReadContentResponse { int64 offset = 1; bytes data = 2; }

enum WriteAction {
  STAT = 0;
  WRITE = 1;
  COMMIT = 2;
}
message WriteContentRequest {
  WriteAction action = 1;
  string ref = 2;
  int64 total = 3;
  string expected = 4;
  int64 offset = 5;
  bytes data = 6;
  map<string, string> labels = 7;
}
message WriteContentResponse {
  WriteAction action = 1;
  int64 offset = 4;
  int64 total = 5;
  string digest = 6;
}
message AbortRequest { string ref = 1; }
`;

const IMAGES = `
syntax = "proto3";
package containerd.services.images.v1;
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "containerd/types.proto";

service Images {
  rpc Get(GetImageRequest) returns (GetImageResponse);
  rpc List(ListImagesRequest) returns (ListImagesResponse);
  rpc Create(CreateImageRequest) returns (CreateImageResponse);
  rpc Update(UpdateImageRequest) returns (UpdateImageResponse);
  rpc Delete(DeleteImageRequest) returns (google.protobuf.Empty);
}

message Image {
  string name = 1;
  map<string, string> labels = 2;
  containerd.types.Descriptor target = 3;
}
message GetImageRequest { string name = 1; }
message GetImageResponse { Image image = 1; }
message CreateImageRequest { Image image = 1; }
message CreateImageResponse { Image image = 1; }
message UpdateImageRequest { Image image = 1; google.protobuf.FieldMask update_mask = 2; }
message UpdateImageResponse { Image image = 1; }
message ListImagesRequest { repeated string filters = 1; }
message ListImagesResponse { repeated Image images = 1; }
message DeleteImageRequest { string name = 1; bool sync = 2; }
`;

const LEASES = `
syntax = "proto3";
package containerd.services.leases.v1;
import "google/protobuf/empty.proto";

service Leases {
  rpc Create(CreateRequest) returns (CreateResponse);
  rpc Delete(DeleteRequest) returns (google.protobuf.Empty);
}

message Lease { string id = 1; map<string, string> labels = 3; }
message CreateRequest { string id = 1; map<string, string> labels = 3; }
message CreateResponse { Lease lease = 1; }
message DeleteRequest { string id = 1; bool sync = 2; }
`;

const EVENTS = `
syntax = "proto3";
package containerd.services.events.v1;
import "google/protobuf/any.proto";

service Events {
  rpc Subscribe(SubscribeRequest) returns (stream Envelope);
}

message SubscribeRequest { repeated string filters = 1; }
message Envelope {
  string namespace = 2;
  string topic = 3;
}
`;

const SNAPSHOTS = `
syntax = "proto3";
package containerd.services.snapshots.v1;
import "google/protobuf/empty.proto";
import "containerd/types.proto";

service Snapshots {
  rpc Prepare(PrepareSnapshotRequest) returns (PrepareSnapshotResponse);
  rpc Commit(CommitSnapshotRequest) returns (google.protobuf.Empty);
  rpc Remove(RemoveSnapshotRequest) returns (google.protobuf.Empty);
  rpc Stat(StatSnapshotRequest) returns (StatSnapshotResponse);
}

message PrepareSnapshotRequest { string snapshotter = 1; string key = 2; string parent = 3; map<string, string> labels = 4; }
message PrepareSnapshotResponse { repeated containerd.types.Mount mounts = 1; }
message CommitSnapshotRequest { string snapshotter = 1; string name = 2; string key = 3; map<string, string> labels = 4; }
message RemoveSnapshotRequest { string snapshotter = 1; string key = 2; }
message StatSnapshotRequest { string snapshotter = 1; string key = 2; }
message SnapshotInfo { string name = 1; string parent = 2; }
message StatSnapshotResponse { SnapshotInfo info = 1; }
`;

const DIFF = `
syntax = "proto3";
package containerd.services.diff.v1;
import "containerd/types.proto";

service Diff {
  rpc Apply(ApplyRequest) returns (ApplyResponse);
}

message ApplyRequest {
  containerd.types.Descriptor diff = 1;
  repeated containerd.types.Mount mounts = 2;
}
message ApplyResponse { containerd.types.Descriptor applied = 1; }
`;

/** File name → source, as the loader resolves imports between them. */
export const CONTAINERD_PROTOS: Readonly<Record<string, string>> = {
  'containerd/types.proto': TYPES,
  'containerd/content.proto': CONTENT,
  'containerd/images.proto': IMAGES,
  'containerd/leases.proto': LEASES,
  'containerd/events.proto': EVENTS,
  'containerd/snapshots.proto': SNAPSHOTS,
  'containerd/diff.proto': DIFF,
};
