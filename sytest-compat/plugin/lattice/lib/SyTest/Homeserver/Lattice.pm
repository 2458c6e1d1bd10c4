# SyTest homeserver driver for Lattice: writes a lattice.toml for each server, mints a TLS
# certificate from SyTest's test CA, gives every start a fresh database, and starts the binary.
# Written for the Lattice project (Apache-2.0).

use strict;
use warnings;

package SyTest::Homeserver::Lattice;
use base qw( SyTest::Homeserver );

use Carp;
use Cwd qw( abs_path );
use File::Path qw( remove_tree make_path );

use SyTest::SSL qw( ensure_ssl_key create_ssl_cert );

sub _init
{
   my $self = shift;
   my ( $args ) = @_;

   $self->{binary} = delete $args->{binary};
   defined $self->{binary} or croak "Need a lattice binary";
   -x $self->{binary} or croak "Lattice binary $self->{binary} is not executable";
   $self->{binary} = abs_path( $self->{binary} );

   $self->SUPER::_init( $args );

   my $idx = $self->{hs_index};
   $self->{ports} = {
      secure   => main::alloc_port( "lattice[$idx]" ),
      unsecure => main::alloc_port( "lattice[$idx].unsecure" ),
   };
   $self->{paths} = {};
}

sub server_name
{
   my $self = shift;
   return $self->{bind_host} . ":" . $self->secure_port;
}

sub federation_host
{
   my $self = shift;
   return $self->{bind_host};
}

sub federation_port
{
   my $self = shift;
   return $self->secure_port;
}

sub secure_port
{
   my $self = shift;
   return $self->{ports}{secure};
}

sub unsecure_port
{
   my $self = shift;
   return $self->{ports}{unsecure};
}

sub public_baseurl
{
   my $self = shift;
   return "https://$self->{bind_host}:" . $self->secure_port;
}

# A TOML string literal.
sub _toml_str
{
   my ( $s ) = @_;
   $s =~ s/\\/\\\\/g;
   $s =~ s/"/\\"/g;
   return "\"$s\"";
}

# A fresh database for this start: a new SQLite file, or a recreated PostgreSQL database.
sub _database_url
{
   my $self = shift;
   my $hs_dir = $self->{hs_dir};
   my $pg = $ENV{LATTICE_SYTEST_POSTGRES};

   if( !defined $pg or $pg eq "" ) {
      unlink "$hs_dir/lattice.db", "$hs_dir/lattice.db-wal", "$hs_dir/lattice.db-shm";
      return "sqlite://$hs_dir/lattice.db?mode=rwc";
   }

   require DBI;
   my ( $user, $host, $port ) = $pg =~ m{^postgres(?:ql)?://([^@/:]+)(?::[^@]*)?@([^:/]+)(?::(\d+))?}
      or die "LATTICE_SYTEST_POSTGRES must look like postgres://user\@host:port\n";
   $port //= 5432;
   my $dbname = "sytest_lattice_" . $self->{hs_index};
   my $dbh = DBI->connect( "dbi:Pg:dbname=postgres;host=$host;port=$port", $user, "",
      { RaiseError => 1, PrintError => 0, AutoCommit => 1 } );
   $dbh->do( "DROP DATABASE IF EXISTS $dbname WITH (FORCE)" );
   $dbh->do( "CREATE DATABASE $dbname" );
   $dbh->disconnect;
   return "postgres://$user\@$host:$port/$dbname";
}

sub start
{
   my $self = shift;

   my $hs_dir = $self->{hs_dir};
   my $output = $self->{output};
   my $idx = $self->{hs_index};
   my $bind_host = $self->{bind_host};

   # Each start is a new server: new data directory (signing key), new database.
   remove_tree( "$hs_dir/data" );
   make_path( "$hs_dir/data" );

   $self->{paths}{cert_file} = "$hs_dir/tls.crt";
   $self->{paths}{key_file} = "$hs_dir/tls.key";
   ensure_ssl_key( $self->{paths}{key_file} );
   create_ssl_cert( $self->{paths}{cert_file}, $self->{paths}{key_file}, $bind_host );

   my $database_url = $self->_database_url;
   my @appservices = map { _toml_str( $_ ) } @{ $self->{app_service_config_files} // [] };
   my $listen_host = $bind_host eq "localhost" ? "127.0.0.1" : $bind_host;

   my $config = join "\n",
      "server_name = " . _toml_str( $self->server_name ),
      "data_dir = " . _toml_str( "$hs_dir/data" ),
      "",
      "[listen]",
      "client = " . _toml_str( "$listen_host:" . $self->unsecure_port ),
      "tls = " . _toml_str( "$listen_host:" . $self->secure_port ),
      "",
      "[tls]",
      "certificate = " . _toml_str( $self->{paths}{cert_file} ),
      "private_key = " . _toml_str( $self->{paths}{key_file} ),
      "",
      "[database]",
      "url = " . _toml_str( $database_url ),
      "",
      "[registration]",
      "enabled = true",
      "shared_secret = \"reg_secret\"",
      # SyTest's guest tests register guests, as Synapse's SyTest config allows.
      "allow_guest_access = true",
      "",
      "[rooms]",
      # SyTest's fake federation peer speaks room versions 1 to 11; the runner passes
      # --room-version 10 and new rooms default to it too.
      "default_version = \"10\"",
      "",
      "[rate_limits]",
      "enabled = false",
      "",
      "[appservices]",
      "registration_files = [" . join( ", ", @appservices ) . "]",
      "",
      "[testing]",
      "insecure_federation_tls = true",
      "allow_private_destinations = true",
      "",
      "[log]",
      "level = \"info\"",
      "";

   $self->{paths}{config} = $self->write_file( "lattice.toml", $config );
   my $log = "$hs_dir/lattice.log";

   $output->diag( "Starting Lattice server $idx on ports " . $self->secure_port . "/" . $self->unsecure_port );

   return $self->_start_process_and_await_connectable(
      command => [
         "sh", "-c", 'exec "$0" --config "$1" 2>>"$2"',
         $self->{binary}, $self->{paths}{config}, $log,
      ],
      connect_host => $bind_host,
      connect_port => $self->secure_port,
      name => "lattice-$idx",
   )->else( sub {
      die "Unable to start Lattice: $_[0] (see $log)\n";
   })->on_done( sub {
      $output->diag( "Started Lattice server $idx" );
   });
}

1;
