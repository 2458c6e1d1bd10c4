# SyTest homeserver factory for Lattice. Loaded from SYTEST_PLUGINS; selected with `-I Lattice`.
# Written for the Lattice project (Apache-2.0).

use strict;
use warnings;

require SyTest::Homeserver::Lattice;

package SyTest::HomeserverFactory::Lattice;
use base qw( SyTest::HomeserverFactory );

sub _init
{
   my $self = shift;
   $self->{args} = {
      binary => "../target/release/lattice",
   };
   $self->SUPER::_init( @_ );
}

sub implementation_name
{
   return "lattice";
}

sub get_options
{
   my $self = shift;
   return (
      'lattice-binary=s' => \$self->{args}{binary},
      $self->SUPER::get_options(),
   );
}

sub print_usage
{
   print STDERR "       --lattice-binary PATH        - the lattice binary to start\n";
   print STDERR "   LATTICE_SYTEST_POSTGRES=postgres://user\@host:port runs each server on a fresh\n";
   print STDERR "   PostgreSQL database instead of SQLite.\n";
}

sub create_server
{
   my $self = shift;
   my %params = ( @_, %{ $self->{args} } );
   return SyTest::Homeserver::Lattice->new( %params );
}

1;
